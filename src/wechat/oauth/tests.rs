//! Unit tests of `WeChatOAuth` (modes, pushes, authorize URLs, redaction).

use super::*;
use crate::wechat::{
    VerifyTicket,
    events::{PushQuery, seal_push, ticket_event_xml},
    persist::MemoryPlatformStore,
};

const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn component_settings() -> WeChatSettings {
    WeChatSettings {
        mode: OAuthMode::Component {
            component_appid: ComponentAppId::new("wx0123456789abcdef"),
            component_secret: AppSecret::new("component-secret-value"),
            tenants: TenantSettings::single(AuthorizerAppId::new("wxa1b2c3d4e5f60708")),
            message_token: SecretString::new("message-token-value"),
            encoding_aes_key: SecretString::new(AES_KEY),
            previous_encoding_aes_key: None,
        },
        client: ClientSettings::default(),
        token: TokenSettings::default(),
    }
}

fn oa_settings() -> WeChatSettings {
    WeChatSettings {
        mode: OAuthMode::OfficialAccount {
            appid: AuthorizerAppId::new("wxa1b2c3d4e5f60708"),
            secret: AppSecret::new("oa-secret-value"),
        },
        client: ClientSettings::default(),
        token: TokenSettings::default(),
    }
}

fn sealed_ticket(token: &str, key: &str, create_time: i64) -> (PushQuery, String) {
    let appid = ComponentAppId::new("wx0123456789abcdef");
    let crypt = MsgCrypt::new(
        &SecretString::new(token),
        &SecretString::new(key),
        appid.clone(),
    )
    .unwrap();
    let xml = ticket_event_xml(
        &appid,
        create_time,
        &VerifyTicket::new("ticket@@@pushed-ticket-value"),
    );
    let (query, body) = seal_push(&crypt, &xml, "1700000000", "42");
    (PushQuery::from_query(&query).unwrap(), body)
}

#[tokio::test]
async fn a_valid_ticket_push_is_stored() {
    let store = Arc::new(MemoryPlatformStore::new());
    let oauth = WeChatOAuth::new(component_settings(), store.clone()).unwrap();
    let (query, body) = sealed_ticket("message-token-value", AES_KEY, 1_700_000_000);
    let event = oauth.accept_push(&query, body.as_bytes()).await.unwrap();
    assert!(matches!(event, PushEvent::ComponentVerifyTicket { .. }));
    let stored = store
        .load_ticket(&ComponentAppId::new("wx0123456789abcdef"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.ticket,
        VerifyTicket::new("ticket@@@pushed-ticket-value")
    );
    assert_eq!(stored.create_time, 1_700_000_000);
    let readiness = oauth.readiness().await;
    assert!(!readiness.ready);
    assert_eq!(
        readiness.reasons,
        vec!["no valid component_access_token yet".to_owned()]
    );
}

#[tokio::test]
async fn a_push_under_the_previous_key_is_accepted_during_rotation() {
    let old_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    let mut settings = component_settings();
    if let OAuthMode::Component {
        previous_encoding_aes_key,
        ..
    } = &mut settings.mode
    {
        *previous_encoding_aes_key = Some(SecretString::new(old_key));
    }
    let store = Arc::new(MemoryPlatformStore::new());
    let oauth = WeChatOAuth::new(settings, store.clone()).unwrap();
    let (query, body) = sealed_ticket("message-token-value", old_key, 1);
    oauth.accept_push(&query, body.as_bytes()).await.unwrap();
}

#[tokio::test]
async fn a_forged_push_is_refused_and_nothing_is_stored() {
    let store = Arc::new(MemoryPlatformStore::new());
    let oauth = WeChatOAuth::new(component_settings(), store.clone()).unwrap();
    let (query, body) = sealed_ticket("someone-elses-token", AES_KEY, 1);
    let e = oauth
        .accept_push(&query, body.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(e, WeChatError::Push(_)), "{e:?}");
    let e = oauth
        .accept_push(&query, b"<xml>garbage")
        .await
        .unwrap_err();
    assert!(matches!(e, WeChatError::Push(_)), "{e:?}");
    assert_eq!(
        store
            .load_ticket(&ComponentAppId::new("wx0123456789abcdef"))
            .await
            .unwrap(),
        None
    );
    assert!(!oauth.token_manager().unwrap().status().ticket_present);
}

#[tokio::test]
async fn official_account_mode_has_no_pushes_and_is_ready() {
    let oauth = WeChatOAuth::new(oa_settings(), Arc::new(MemoryPlatformStore::new())).unwrap();
    let (query, body) = sealed_ticket("message-token-value", AES_KEY, 1);
    let e = oauth
        .accept_push(&query, body.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(e, WeChatError::Misconfigured { .. }));
    assert_eq!(oauth.component_appid(), None);
    assert!(oauth.start_background().is_none());
    assert!(oauth.readiness().await.ready);
}

#[test]
fn a_bad_aes_key_is_refused_at_construction() {
    let mut settings = component_settings();
    if let OAuthMode::Component {
        encoding_aes_key, ..
    } = &mut settings.mode
    {
        *encoding_aes_key = SecretString::new("too-short");
    }
    let e = WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap_err();
    assert!(matches!(e, WeChatError::Crypto(_)), "{e:?}");
}

#[test]
fn authorize_url_depends_on_the_mode() {
    let store: Arc<dyn PlatformStore> = Arc::new(MemoryPlatformStore::new());
    let state = OAuthState::new("st4te");
    let component = WeChatOAuth::new(component_settings(), Arc::clone(&store)).unwrap();
    let appid = AuthorizerAppId::new("wxa1b2c3d4e5f60708");
    let url = component
        .authorize_url(&appid, "https://a.example/cb", Scope::UserInfo, &state)
        .unwrap();
    assert!(url.starts_with(
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxa1b2c3d4e5f60708&"
    ));
    assert!(url.ends_with("&component_appid=wx0123456789abcdef#wechat_redirect"));
    let oa = WeChatOAuth::new(oa_settings(), store).unwrap();
    let url = oa
        .authorize_url(&appid, "https://a.example/cb", Scope::Base, &state)
        .unwrap();
    assert!(url.ends_with("&state=st4te&connect_redirect=1#wechat_redirect"));
    assert_eq!(oa.single_appid(), Some(&appid));
    assert_eq!(component.single_appid(), Some(&appid));
}

#[test]
fn debug_shows_no_secrets() {
    let settings = component_settings();
    let shown_settings = format!("{settings:?}");
    let oauth = WeChatOAuth::new(settings, Arc::new(MemoryPlatformStore::new())).unwrap();
    let oa = WeChatOAuth::new(oa_settings(), Arc::new(MemoryPlatformStore::new())).unwrap();
    let shown = format!("{shown_settings} {oauth:?} {oa:?}");
    for secret in [
        "component-secret-value",
        "message-token-value",
        AES_KEY,
        "oa-secret-value",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("wx0123456789abcdef"));
}
