//! Unit tests of the atomic swap: every service made before a reload follows it, a request
//! under way keeps the settings it started with, a refused reload changes nothing, and the
//! tenant registry follows the configured accounts.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header::ACCEPT};
use http_body_util::Empty;
use tower::{Layer as _, Service, ServiceExt as _, service_fn};

use super::*;
use crate::{
    jwt::{JwtIssuer, JwtSettings},
    layer::{
        SkipRule,
        tenant::{TenantHost, TenantRejection, TenantSite},
    },
    secret::SecretString,
    session::{CookieCodec, CookieSettings, MemoryStore, SessionSettings},
    wechat::{
        AppSecret, AuthorizerAppId, ComponentAppId,
        client::ClientSettings,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::MemoryPlatformStore,
        tenants::{TenantMode, TenantSettings, TenantStatus},
        token::TokenSettings,
    },
};

const A: &str = "wxaaaaaaaaaaaaaaaa";
const B: &str = "wxbbbbbbbbbbbbbbbb";

fn wechat(mode: OAuthMode) -> WeChatOAuth {
    let settings = WeChatSettings {
        mode,
        client: ClientSettings::default(),
        token: TokenSettings::default(),
    };
    WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap()
}

fn official_account() -> WeChatOAuth {
    wechat(OAuthMode::OfficialAccount {
        appid: AuthorizerAppId::new(A),
        secret: AppSecret::new("oa-secret-value"),
    })
}

fn platform(configured: &[&str]) -> WeChatOAuth {
    wechat(OAuthMode::Component {
        component_appid: ComponentAppId::new("wx0123456789abcdef"),
        component_secret: AppSecret::new("component-secret-value"),
        tenants: TenantSettings::new(
            TenantMode::Static,
            configured
                .iter()
                .map(|a| AuthorizerAppId::new(*a))
                .collect(),
        ),
        message_token: SecretString::new("message-token-value"),
        encoding_aes_key: SecretString::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
        previous_encoding_aes_key: None,
    })
}

fn layer(settings: LayerSettings, wechat: WeChatOAuth) -> WeChatAuthLayer {
    let master = SecretString::new("reload unit tests: a master secret of 32+ bytes");
    let cookies = CookieSettings {
        secure: false,
        ..CookieSettings::default()
    };
    WeChatAuthLayer::new(
        settings,
        wechat,
        Arc::new(MemoryStore::new(SessionSettings::default())),
        CookieCodec::new(&master, cookies).unwrap(),
        JwtIssuer::new(JwtSettings::default(), &master).unwrap(),
    )
    .unwrap()
}

fn skipping(pattern: &str) -> DispatchSettings {
    DispatchSettings {
        skip: vec![SkipRule::new(Some(Method::GET), pattern).unwrap()],
        ..DispatchSettings::default()
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(ACCEPT, "application/json")
        .body(Empty::new())
        .unwrap()
}

type Inner = tower::util::ServiceFn<
    fn(Request<Empty<Bytes>>) -> std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>,
>;

fn inner() -> Inner {
    service_fn(|_| std::future::ready(Ok(Response::new(Empty::new()))))
}

/// 200: the inner service answered (skipped); 401: protected, no session.
async fn status(service: &mut super::super::WeChatAuth<Inner>, path: &str) -> StatusCode {
    service
        .ready()
        .await
        .unwrap()
        .call(get(path))
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn every_service_follows_a_reload_and_a_request_under_way_keeps_its_settings() {
    let settings = LayerSettings {
        dispatch: skipping("/public/*"),
        ..LayerSettings::default()
    };
    let layer = layer(settings, official_account());
    let clone = layer.clone();
    // Made before the reload, as the sidecar's connections are.
    let mut service = layer.layer(inner());
    assert_eq!(status(&mut service, "/public/a").await, StatusCode::OK);
    assert_eq!(
        status(&mut service, "/new/a").await,
        StatusCode::UNAUTHORIZED
    );

    // Started (its settings loaded) before the reload, finished after it.
    let under_way = service.ready().await.unwrap().call(get("/public/b"));
    clone
        .reload(ReloadableSettings {
            dispatch: skipping("/new/*"),
            tenants: None,
        })
        .unwrap();
    assert_eq!(under_way.await.unwrap().status(), StatusCode::OK);

    assert_eq!(status(&mut service, "/new/a").await, StatusCode::OK);
    assert_eq!(
        status(&mut service, "/public/a").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        layer.settings().dispatch.skip,
        clone.settings().dispatch.skip
    );
    // A service made after the reload agrees.
    let mut fresh = layer.layer(inner());
    assert_eq!(status(&mut fresh, "/new/a").await, StatusCode::OK);
}

#[tokio::test]
async fn a_refused_reload_changes_nothing() {
    let layer = layer(
        LayerSettings {
            dispatch: skipping("/public/*"),
            ..LayerSettings::default()
        },
        official_account(),
    );
    let mut service = layer.layer(inner());
    let bad_api = ReloadableSettings {
        dispatch: DispatchSettings {
            api_prefixes: vec!["no-slash".into()],
            ..skipping("/new/*")
        },
        tenants: None,
    };
    assert!(matches!(
        layer.reload(bad_api),
        Err(BuildError::InvalidApiPrefix(_))
    ));
    let other_prefix = ReloadableSettings {
        dispatch: DispatchSettings {
            prefix: crate::layer::Prefix::parse("/auth").unwrap(),
            ..skipping("/new/*")
        },
        tenants: None,
    };
    assert!(matches!(
        layer.reload(other_prefix),
        Err(BuildError::NotReloadable("prefix"))
    ));
    let tenants_now = ReloadableSettings {
        dispatch: skipping("/new/*"),
        tenants: Some(TenantRouting::default()),
    };
    assert!(matches!(
        layer.reload(tenants_now),
        Err(BuildError::NotReloadable("tenants"))
    ));
    assert_eq!(status(&mut service, "/public/a").await, StatusCode::OK);
    assert_eq!(
        status(&mut service, "/new/a").await,
        StatusCode::UNAUTHORIZED
    );
}

fn site(appid: &str, host: &str) -> TenantSite {
    TenantSite {
        appid: AuthorizerAppId::new(appid),
        hosts: vec![TenantHost::try_from(host.to_owned()).unwrap()],
        name: None,
        audience: Some(format!("aud-{host}")),
    }
}

fn routing(sites: Vec<TenantSite>) -> ReloadableSettings {
    ReloadableSettings {
        dispatch: DispatchSettings::default(),
        tenants: Some(TenantRouting {
            sites,
            ..TenantRouting::default()
        }),
    }
}

#[tokio::test]
async fn a_reload_adds_and_removes_tenants_on_both_sides() {
    let wechat = platform(&[A]);
    let registry = wechat.tenants().clone();
    let first = routing(vec![site(A, "a.example")]);
    let layer = layer(
        LayerSettings {
            tenants: first.tenants.clone(),
            ..LayerSettings::default()
        },
        wechat,
    );
    assert_eq!(
        layer.resolve(Some("b.example"), "/").unwrap_err(),
        TenantRejection::Unknown
    );

    layer
        .reload(routing(vec![site(A, "a.example"), site(B, "b.example")]))
        .unwrap();
    let b = layer.resolve(Some("b.example"), "/").unwrap();
    assert_eq!(b.appid().as_str(), B);
    assert_eq!(b.status(), TenantStatus::Configured);
    assert_eq!(b.audience().map(|a| a.as_ref()), Some("aud-b.example"));
    assert_eq!(
        registry.status(&AuthorizerAppId::new(B)),
        TenantStatus::Configured
    );

    // A host listed twice is refused as the builder refuses it; the registry is untouched.
    let twice = routing(vec![site(B, "b.example"), site(A, "b.example")]);
    assert!(matches!(
        layer.reload(twice),
        Err(BuildError::InvalidTenants(_))
    ));
    assert!(layer.resolve(Some("a.example"), "/").is_ok());

    layer.reload(routing(vec![site(B, "b.example")])).unwrap();
    assert_eq!(
        layer.resolve(Some("a.example"), "/").unwrap_err(),
        TenantRejection::Unknown
    );
    assert_eq!(
        registry.status(&AuthorizerAppId::new(A)),
        TenantStatus::Unknown
    );
    assert!(!registry.accepts(&AuthorizerAppId::new(A)));
}

#[tokio::test]
async fn access_lists_set_at_runtime_survive_a_reload() {
    let layer = layer(LayerSettings::default(), official_account());
    let nobody = crate::access::AccessRules {
        allow_unionids: Some(Default::default()),
        ..Default::default()
    };
    let lists = crate::access::AccessLists::new(nobody, []).unwrap();
    layer.set_access_lists(lists.clone());
    layer
        .reload(ReloadableSettings {
            dispatch: skipping("/new/*"),
            tenants: None,
        })
        .unwrap();
    // The reloaded state shares the lists in force: a reload of the routes never reopens
    // the door to people the lists keep out.
    assert_eq!(*layer.access_lists(), lists);
    // And a later swap reaches the reloaded state.
    layer.set_access_lists(crate::access::AccessLists::default());
    assert!(layer.access_lists().is_empty());
}
