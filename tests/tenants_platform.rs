//! Many official accounts behind one third-party platform (issue 11), WeChat side: the tenant
//! registry follows the simulated WeChat's authorization pushes and authorizer list over real
//! loopback sockets, survives restarts, and web OAuth runs per account.
//!
//! Every push goes from the simulator through a real events URL (`support::events`) into
//! `WeChatOAuth::accept_push`; every WeChat call goes to the simulator. Waits are bounded polls.
#![cfg(feature = "sim")]
// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::HashMap, sync::Arc, time::Duration};

use support::{
    TempDir, bounded,
    events::{EventsReceiver, give_ticket},
};
use url::Url;
use wechat_oauth_proxy::{
    sim::{Endpoint, Failure, SimAuthorizer, SimConfig, SimWeChat},
    wechat::{
        AuthorizationCode, AuthorizerAppId, OAuthState, Scope,
        client::ClientSettings,
        error::WeChatError,
        oauth::{OAuthMode, WeChatOAuth, WeChatSettings},
        persist::{FileStore, MemoryPlatformStore, PlatformStore},
        tenants::{TenantChange, TenantMode, TenantSettings, TenantStatus},
        token::TokenSettings,
    },
};

/// The simulator's primary account (authorized with every usual permission set).
fn primary() -> AuthorizerAppId {
    SimConfig::default().authorizer_appid
}

fn appid(n: u32) -> AuthorizerAppId {
    AuthorizerAppId::new(format!("wxb{n:015x}"))
}

/// Fast retries so that failure paths finish quickly.
fn tenant_settings(mode: TenantMode, configured: Vec<AuthorizerAppId>) -> TenantSettings {
    TenantSettings {
        query_auth_retry_delays: vec![Duration::from_millis(20); 3],
        reconcile_retry: Duration::from_millis(50),
        ..TenantSettings::new(mode, configured)
    }
}

async fn start(config: SimConfig) -> SimWeChat {
    bounded(SimWeChat::start(config, ([127, 0, 0, 1], 0).into()))
        .await
        .unwrap()
}

fn oauth(
    sim: &SimWeChat,
    store: Arc<dyn PlatformStore>,
    tenants: TenantSettings,
    request_timeout: Duration,
) -> WeChatOAuth {
    let mut mode = sim.config().component_mode();
    if let OAuthMode::Component { tenants: t, .. } = &mut mode {
        *t = tenants;
    }
    WeChatOAuth::new(
        WeChatSettings {
            mode,
            client: ClientSettings {
                api_base: sim.base_url(),
                open_base: sim.base_url(),
                request_timeout,
                ..ClientSettings::default()
            },
            token: TokenSettings::default(),
        },
        store,
    )
    .unwrap()
}

/// An OAuth client on the sim with a ticket and an events URL the sim pushes to.
struct Platform {
    sim: SimWeChat,
    oauth: WeChatOAuth,
    store: Arc<dyn PlatformStore>,
    _receiver: EventsReceiver,
}

async fn platform(config: SimConfig, tenants: TenantSettings) -> Platform {
    platform_with(config, tenants, Arc::new(MemoryPlatformStore::new()), 5_000).await
}

async fn platform_with(
    config: SimConfig,
    tenants: TenantSettings,
    store: Arc<dyn PlatformStore>,
    request_timeout_ms: u64,
) -> Platform {
    let sim = start(config).await;
    let oauth = oauth(
        &sim,
        Arc::clone(&store),
        tenants,
        Duration::from_millis(request_timeout_ms),
    );
    give_ticket(&sim, &oauth).await;
    let receiver = EventsReceiver::start(oauth.clone()).await;
    sim.set_events_url(receiver.url.clone());
    Platform {
        sim,
        oauth,
        store,
        _receiver: receiver,
    }
}

/// Polls until `status` is reached (bounded).
async fn wait_for_status(oauth: &WeChatOAuth, appid: &AuthorizerAppId, status: TenantStatus) {
    // Up to 20 s: the background lookups run on a loaded 2-core CI machine.
    for _ in 0..2_000 {
        if oauth.tenants().status(appid) == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{appid} did not become {status} (is {})",
        oauth.tenants().status(appid)
    );
}

/// Polls until the sim counted `n` calls of `endpoint` (bounded).
async fn wait_for_calls(sim: &SimWeChat, endpoint: Endpoint, n: u64) {
    for _ in 0..1_000 {
        if sim.calls(endpoint) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{endpoint:?} was called {} times, expected {n}",
        sim.calls(endpoint)
    );
}

async fn stored_status(
    store: &Arc<dyn PlatformStore>,
    appid: &AuthorizerAppId,
) -> Option<TenantStatus> {
    let component = SimConfig::default().component_appid;
    bounded(store.load_tenants(&component))
        .await
        .unwrap()
        .into_iter()
        .find(|(a, _)| a == appid)
        .map(|(_, r)| r.status)
}

/// Two accounts: the primary one and `appid(1)`, which has not authorized the platform yet.
fn two_accounts() -> SimConfig {
    SimConfig::with_authorizers(vec![SimAuthorizer::new(appid(1), "B 店").unauthorized()])
}

/// [`two_accounts`], both configured (static mode).
async fn two_tenants() -> Platform {
    platform(
        two_accounts(),
        tenant_settings(TenantMode::Static, vec![primary(), appid(1)]),
    )
    .await
}

#[tokio::test]
async fn an_authorized_push_makes_the_tenant_active_through_query_auth() {
    let p = two_tenants().await;
    let mut changes = p.oauth.tenants().subscribe();
    assert_eq!(
        p.oauth.tenants().status(&appid(1)),
        TenantStatus::Configured
    );

    bounded(p.sim.authorize_account(&appid(1), &[1, 4, 15]))
        .await
        .expect("the push is answered `success`");
    wait_for_status(&p.oauth, &appid(1), TenantStatus::Active).await;

    let record = p.oauth.tenants().record(&appid(1)).unwrap();
    assert_eq!(record.func_ids, vec![1, 4, 15]);
    assert!(record.updated_at > 0);
    assert_eq!(p.sim.calls(Endpoint::QueryAuth), 1);
    assert_eq!(
        p.sim.calls(Endpoint::AuthorizerInfo),
        0,
        "no fallback needed"
    );
    let change = bounded(changes.recv()).await.unwrap();
    assert_eq!(
        change,
        TenantChange {
            appid: appid(1),
            previous: TenantStatus::Configured,
            status: TenantStatus::Active,
        }
    );
    assert_eq!(
        stored_status(&p.store, &appid(1)).await,
        Some(TenantStatus::Active)
    );
}

#[tokio::test]
async fn an_authorization_without_set_4_means_no_web_permission() {
    let p = two_tenants().await;
    bounded(p.sim.authorize_account(&appid(1), &[1, 2, 3]))
        .await
        .unwrap();
    wait_for_status(&p.oauth, &appid(1), TenantStatus::NoWebPermission).await;
    // The proxy refuses to send a browser there…
    assert_eq!(
        refused_authorize(&p, &appid(1)),
        TenantStatus::NoWebPermission
    );
    // …and WeChat (the sim) would have refused it with 10015.
    let mut url = p.sim.base_url().join("connect/oauth2/authorize").unwrap();
    url.query_pairs_mut()
        .append_pair("appid", appid(1).as_str())
        .append_pair("redirect_uri", "http://127.0.0.1/cb")
        .append_pair("response_type", "code")
        .append_pair("scope", "snsapi_base")
        .append_pair("state", "s")
        .append_pair("component_appid", p.sim.config().component_appid.as_str());
    let page = bounded(no_redirects().get(url).send()).await.unwrap();
    assert_eq!(page.headers()["x-sim-error"], "10015");

    // Granting set 4 later (updateauthorized) makes it active.
    bounded(p.sim.update_account(&appid(1), &[1, 2, 3, 4]))
        .await
        .unwrap();
    wait_for_status(&p.oauth, &appid(1), TenantStatus::Active).await;
}

#[tokio::test]
async fn unauthorized_revokes_at_once_is_persisted_and_broadcast() {
    let p = two_tenants().await;
    let mut changes = p.oauth.tenants().subscribe();
    bounded(p.sim.revoke_account(&primary())).await.unwrap();
    // No waiting: the push was answered only after the revocation was recorded and stored.
    assert_eq!(p.oauth.tenants().status(&primary()), TenantStatus::Revoked);
    assert_eq!(
        stored_status(&p.store, &primary()).await,
        Some(TenantStatus::Revoked)
    );
    let change = changes
        .try_recv()
        .expect("the change was broadcast before `success`");
    assert_eq!(change.appid, primary());
    assert_eq!(change.status, TenantStatus::Revoked);

    // A login of that account that was under way fails cleanly at the code exchange.
    let code = p.sim.issue_code(
        p.sim.config().users[0].clone(),
        Scope::Base,
        wechat_oauth_proxy::sim::AuthMode::Component,
    );
    let e = bounded(p.oauth.exchange_code(&primary(), &code))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            WeChatError::Tenant {
                status: TenantStatus::Revoked,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(p.sim.calls(Endpoint::ComponentCodeExchange), 0);
    // The other tenant and the platform are untouched.
    assert_eq!(
        p.oauth.tenants().status(&appid(1)),
        TenantStatus::Configured
    );
    bounded(p.oauth.token_manager().unwrap().token())
        .await
        .unwrap();
    assert!(bounded(p.oauth.readiness()).await.ready);
}

#[tokio::test]
async fn static_mode_ignores_pushes_for_accounts_that_are_not_configured() {
    let p = platform(
        two_accounts(),
        tenant_settings(TenantMode::Static, vec![primary()]),
    )
    .await;
    bounded(p.sim.authorize_account(&appid(1), &[1, 4]))
        .await
        .expect("still answered `success`");
    bounded(p.sim.revoke_account(&appid(1))).await.unwrap();
    // Give a (wrongly) spawned lookup ample time to reach the fast loopback sim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.sim.calls(Endpoint::QueryAuth), 0);
    assert_eq!(p.sim.calls(Endpoint::AuthorizerInfo), 0);
    assert_eq!(p.oauth.tenants().status(&appid(1)), TenantStatus::Unknown);
    assert_eq!(stored_status(&p.store, &appid(1)).await, None);
    assert_eq!(
        p.oauth
            .tenants()
            .list()
            .into_iter()
            .map(|(a, _)| a)
            .collect::<Vec<_>>(),
        vec![primary()]
    );
}

#[tokio::test]
async fn dynamic_mode_learns_any_account_from_its_push() {
    let p = platform(two_accounts(), tenant_settings(TenantMode::Dynamic, vec![])).await;
    assert_eq!(p.oauth.tenants().status(&appid(1)), TenantStatus::Unknown);
    bounded(p.sim.authorize_account(&appid(1), &[4]))
        .await
        .unwrap();
    wait_for_status(&p.oauth, &appid(1), TenantStatus::Active).await;
}

#[tokio::test]
async fn failing_query_auth_is_retried_within_its_bound_then_falls_back() {
    let p = two_tenants().await;
    // Every try of api_query_auth fails (1 + 3 retries); the fallback works.
    p.sim.inject(Endpoint::QueryAuth, Failure::SystemBusy, 4);
    bounded(p.sim.authorize_account(&appid(1), &[4]))
        .await
        .unwrap();
    wait_for_status(&p.oauth, &appid(1), TenantStatus::Active).await;
    assert_eq!(
        p.sim.calls(Endpoint::QueryAuth),
        4,
        "exactly 1 try + 3 retries"
    );
    assert_eq!(p.sim.calls(Endpoint::AuthorizerInfo), 1);
    let record = p.oauth.tenants().record(&appid(1)).unwrap();
    assert_eq!(record.nick_name.as_deref(), Some("B 店"));
}

#[tokio::test]
async fn failing_lookups_leave_the_tenant_in_its_previous_state() {
    let p = two_tenants().await;
    p.sim.inject(Endpoint::QueryAuth, Failure::Http500, 10);
    p.sim
        .inject(Endpoint::AuthorizerInfo, Failure::SystemBusy, 10);
    bounded(p.sim.authorize_account(&appid(1), &[4]))
        .await
        .expect("the push is answered `success` anyway");
    wait_for_calls(&p.sim, Endpoint::AuthorizerInfo, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.sim.calls(Endpoint::QueryAuth), 4);
    assert_eq!(p.sim.calls(Endpoint::AuthorizerInfo), 1);
    assert_eq!(
        p.oauth.tenants().status(&appid(1)),
        TenantStatus::Configured
    );
    assert_eq!(stored_status(&p.store, &appid(1)).await, None);
}

#[tokio::test]
async fn hanging_query_auth_is_bounded_by_the_client_timeout() {
    let p = platform_with(
        two_accounts(),
        tenant_settings(TenantMode::Static, vec![primary(), appid(1)]),
        Arc::new(MemoryPlatformStore::new()),
        300,
    )
    .await;
    // Fetch the token first so that only the hanging calls are slow.
    bounded(p.oauth.token_manager().unwrap().token())
        .await
        .unwrap();
    p.sim.inject(Endpoint::QueryAuth, Failure::Hang, 10);
    p.sim.inject(Endpoint::AuthorizerInfo, Failure::Hang, 10);
    let pushed = std::time::Instant::now();
    bounded(p.sim.authorize_account(&appid(1), &[4]))
        .await
        .expect("the push is answered `success` without waiting for WeChat");
    assert!(
        pushed.elapsed() < Duration::from_secs(5),
        "accept_push waited for the lookup"
    );
    assert_eq!(
        p.sim.calls(Endpoint::AuthorizerInfo),
        0,
        "`success` was answered before the lookup ran its course"
    );
    // 4 tries × 300 ms + 3 × 20 ms, then the fallback's 300 ms: well inside the wait bound.
    wait_for_calls(&p.sim, Endpoint::AuthorizerInfo, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.sim.calls(Endpoint::QueryAuth), 4);
    assert_eq!(p.sim.calls(Endpoint::AuthorizerInfo), 1);
    assert_eq!(
        p.oauth.tenants().status(&appid(1)),
        TenantStatus::Configured
    );
}

#[tokio::test]
async fn reconcile_pages_through_the_list_and_revokes_a_missing_account() {
    // 520 accounts besides the primary: two pages of at most 500.
    let mut accounts: Vec<SimAuthorizer> = (1..=520)
        .map(|n| SimAuthorizer::new(appid(n), format!("店 {n}")))
        .collect();
    accounts.push(SimAuthorizer::new(appid(600), "no web").with_funcs(&[1, 2]));
    let missing = appid(999);
    let p = platform(
        SimConfig::with_authorizers(accounts),
        tenant_settings(
            TenantMode::Static,
            vec![primary(), appid(520), missing.clone()],
        ),
    )
    .await;
    let report = bounded(p.oauth.reconcile_tenants()).await.unwrap();
    assert_eq!(report.listed, 522);
    assert_eq!(report.revoked, 1);
    assert_eq!(
        report.checked, 2,
        "only the configured accounts are looked up"
    );
    assert_eq!(report.failed, 0);
    assert_eq!(p.sim.calls(Endpoint::AuthorizerList), 2);
    assert_eq!(p.oauth.tenants().status(&missing), TenantStatus::Revoked);
    assert_eq!(p.oauth.tenants().status(&primary()), TenantStatus::Active);
    assert_eq!(p.oauth.tenants().status(&appid(520)), TenantStatus::Active);
    assert_eq!(
        p.oauth.tenants().status(&appid(1)),
        TenantStatus::Unknown,
        "static mode does not adopt listed accounts"
    );
    assert_eq!(
        stored_status(&p.store, &missing).await,
        Some(TenantStatus::Revoked)
    );
    let record = p.oauth.tenants().record(&appid(520)).unwrap();
    assert_eq!(record.nick_name.as_deref(), Some("店 520"));
    assert_eq!(record.service_type, Some(2));
    assert_eq!(record.account_status, Some(1));

    // Dynamic mode learns every listed account; a failing lookup spoils nothing else.
    let dynamic = oauth(
        &p.sim,
        Arc::new(MemoryPlatformStore::new()),
        tenant_settings(TenantMode::Dynamic, vec![]),
        Duration::from_secs(5),
    );
    give_ticket(&p.sim, &dynamic).await;
    p.sim
        .inject(Endpoint::AuthorizerInfo, Failure::SystemBusy, 1);
    let report = bounded(dynamic.reconcile_tenants()).await.unwrap();
    assert_eq!((report.checked, report.failed), (522, 1));
    let statuses: HashMap<TenantStatus, usize> =
        dynamic
            .tenants()
            .list()
            .into_iter()
            .fold(HashMap::new(), |mut acc, (_, r)| {
                *acc.entry(r.status).or_default() += 1;
                acc
            });
    assert_eq!(statuses.get(&TenantStatus::Active), Some(&520));
    assert_eq!(statuses.get(&TenantStatus::NoWebPermission), Some(&1));
    // The next round retries the one that failed.
    let report = bounded(dynamic.reconcile_tenants()).await.unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(dynamic.tenants().list().len(), 522);
}

#[tokio::test]
async fn the_background_reconciles_once_a_token_exists() {
    let sim = start(two_accounts()).await;
    let missing = appid(999);
    let oauth = oauth(
        &sim,
        Arc::new(MemoryPlatformStore::new()),
        TenantSettings {
            reconcile_interval: Some(Duration::from_secs(3600)),
            ..tenant_settings(TenantMode::Static, vec![primary(), missing.clone()])
        },
        Duration::from_secs(5),
    );
    let background = oauth.start_background().unwrap();
    // No ticket yet: the first rounds fail and are retried.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(oauth.tenants().status(&missing), TenantStatus::Configured);
    give_ticket(&sim, &oauth).await;
    wait_for_status(&oauth, &missing, TenantStatus::Revoked).await;
    wait_for_status(&oauth, &primary(), TenantStatus::Active).await;
    background.abort();
}

#[tokio::test]
async fn tenant_state_survives_a_restart_with_the_file_store() {
    let dir = TempDir::new("tenants-restart");
    let settings = tenant_settings(TenantMode::Static, vec![primary(), appid(1)]);
    {
        let store: Arc<dyn PlatformStore> = Arc::new(FileStore::new(dir.0.clone()).unwrap());
        let p = platform_with(two_accounts(), settings.clone(), store, 5_000).await;
        bounded(p.sim.revoke_account(&primary())).await.unwrap();
        bounded(p.sim.authorize_account(&appid(1), &[4]))
            .await
            .unwrap();
        wait_for_status(&p.oauth, &appid(1), TenantStatus::Active).await;
        // The status is applied in memory first and written right after: wait for the file.
        let component = p.oauth.component_appid().unwrap().clone();
        let mut persisted = false;
        for _ in 0..2_000 {
            let records = bounded(p.store.load_tenants(&component)).await.unwrap();
            if records
                .iter()
                .any(|(a, r)| *a == appid(1) && r.status == TenantStatus::Active)
            {
                persisted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(persisted, "the learned status never reached the file store");
    }
    // A new process on the same state directory.
    let sim = start(two_accounts()).await;
    let store: Arc<dyn PlatformStore> = Arc::new(FileStore::new(dir.0.clone()).unwrap());
    let restarted = oauth(&sim, store, settings, Duration::from_secs(5));
    assert_eq!(
        restarted.tenants().status(&primary()),
        TenantStatus::Configured,
        "nothing read yet"
    );
    let background = restarted.start_background().unwrap();
    wait_for_status(&restarted, &primary(), TenantStatus::Revoked).await;
    wait_for_status(&restarted, &appid(1), TenantStatus::Active).await;
    assert_eq!(
        restarted.tenants().record(&appid(1)).unwrap().func_ids,
        vec![4]
    );
    background.abort();
    // Nothing secret went to disk: no authorizer token, no authorization code.
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("refreshtoken@@@"), "{text}");
        assert!(!text.contains("queryauthcode@@@"), "{text}");
        assert!(!text.contains("authorizer_access_token"), "{text}");
    }
}

/// The proxy refuses to build an authorize URL for `appid`: the tenant status it names.
fn refused_authorize(p: &Platform, appid: &AuthorizerAppId) -> TenantStatus {
    let e = p
        .oauth
        .authorize_url(
            appid,
            "http://127.0.0.1/cb",
            Scope::Base,
            &OAuthState::new("s"),
        )
        .unwrap_err();
    match e {
        WeChatError::Tenant {
            appid: named,
            status,
        } if &named == appid => status,
        other => panic!("{other:?}"),
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(support::WECHAT_UA)
        .build()
        .unwrap()
}

/// Runs the authorize page for `appid` and returns the callback's query.
async fn authorize(
    p: &Platform,
    appid: &AuthorizerAppId,
    state: &str,
) -> (String, HashMap<String, String>) {
    let url = p
        .oauth
        .authorize_url(
            appid,
            "http://127.0.0.1:9/_wxauth/callback",
            Scope::UserInfo,
            &OAuthState::new(state),
        )
        .unwrap();
    let response = bounded(no_redirects().get(&url).send()).await.unwrap();
    assert_eq!(response.status().as_u16(), 302, "{url}");
    let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    (url, location.query_pairs().into_owned().collect())
}

#[tokio::test]
async fn each_tenant_gets_its_own_openid_for_the_same_user() {
    let config = SimConfig::with_authorizers(vec![SimAuthorizer::new(appid(1), "B 店")]);
    let p = platform(
        config,
        tenant_settings(TenantMode::Static, vec![primary(), appid(1)]),
    )
    .await;
    let component = p.sim.config().component_appid.clone();
    let mut identities = Vec::new();
    for tenant in [primary(), appid(1)] {
        let (url, callback) = authorize(&p, &tenant, "st4te").await;
        let sent: HashMap<String, String> = Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(sent["appid"], tenant.as_str());
        assert_eq!(sent["component_appid"], component.as_str());
        assert_eq!(callback["appid"], tenant.as_str());
        let code = AuthorizationCode::new(callback["code"].clone());
        let token = bounded(p.oauth.exchange_code(&tenant, &code))
            .await
            .unwrap();
        let info = bounded(p.oauth.user_info(&token)).await.unwrap();
        assert_eq!(info.openid, token.openid);
        identities.push((token.openid, token.unionid));
    }
    assert_ne!(
        identities[0].0, identities[1].0,
        "openids differ per account"
    );
    assert_eq!(identities[0].1, identities[1].1, "the unionid does not");
    assert_eq!(
        identities[0].0.as_str(),
        p.sim.config().users[0].openid,
        "the primary account keeps the configured openid"
    );

    // A code issued for account A cannot be exchanged as account B's.
    let (_, callback) = authorize(&p, &primary(), "again").await;
    let code = AuthorizationCode::new(callback["code"].clone());
    let e = bounded(p.oauth.exchange_code(&appid(1), &code))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(40029), "{e:?}");
    // An account that is not a tenant gets no authorize URL at all.
    assert_eq!(refused_authorize(&p, &appid(7)), TenantStatus::Unknown);
    assert_eq!(p.oauth.single_appid(), None);
    assert!(p.oauth.default_appid().is_err());
}

#[tokio::test]
async fn official_account_mode_serves_its_one_account_only() {
    let sim = start(SimConfig::default()).await;
    let c = sim.config();
    let oauth = WeChatOAuth::new(
        WeChatSettings {
            mode: OAuthMode::OfficialAccount {
                appid: c.authorizer_appid.clone(),
                secret: c.official_account_secret.clone(),
            },
            client: ClientSettings {
                api_base: sim.base_url(),
                open_base: sim.base_url(),
                ..ClientSettings::default()
            },
            token: TokenSettings::default(),
        },
        Arc::new(MemoryPlatformStore::new()),
    )
    .unwrap();
    assert_eq!(
        oauth.tenants().status(&c.authorizer_appid),
        TenantStatus::Configured
    );
    let code = sim.issue_code(
        c.users[0].clone(),
        Scope::Base,
        wechat_oauth_proxy::sim::AuthMode::OfficialAccount,
    );
    let e = bounded(oauth.exchange_code(&appid(1), &code))
        .await
        .unwrap_err();
    assert!(matches!(e, WeChatError::Tenant { .. }), "{e:?}");
    assert_eq!(sim.calls(Endpoint::OaCodeExchange), 0);
    bounded(oauth.exchange_code(&c.authorizer_appid, &code))
        .await
        .unwrap();
}
