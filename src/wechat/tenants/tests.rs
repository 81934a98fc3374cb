//! Unit tests of the tenant registry: statuses, modes, events against stale lookups, store
//! adoption and change broadcasts.

use super::*;

fn a() -> AuthorizerAppId {
    AuthorizerAppId::new("wxaaaaaaaaaaaaaaaa")
}

fn b() -> AuthorizerAppId {
    AuthorizerAppId::new("wxbbbbbbbbbbbbbbbb")
}

fn active(at: i64) -> TenantRecord {
    TenantRecord {
        func_ids: vec![1, 4],
        ..TenantRecord::with_status(TenantStatus::Active, at)
    }
}

#[test]
fn only_active_and_configured_allow_logins() {
    for (status, allows, word) in [
        (TenantStatus::Active, true, "active"),
        (TenantStatus::Configured, true, "configured"),
        (TenantStatus::NoWebPermission, false, "no_web_permission"),
        (TenantStatus::Revoked, false, "revoked"),
        (TenantStatus::Unknown, false, "unknown"),
    ] {
        assert_eq!(status.allows_login(), allows, "{status:?}");
        assert_eq!(status.as_str(), word);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{word}\"")
        );
    }
    assert_eq!(
        TenantStatus::from_func_ids(&[1, 4, 15]),
        TenantStatus::Active
    );
    assert_eq!(
        TenantStatus::from_func_ids(&[1, 2, 3]),
        TenantStatus::NoWebPermission
    );
}

#[test]
fn static_mode_knows_only_the_configured_accounts() {
    let tenants = Tenants::new(TenantMode::Static, &[a()]);
    assert_eq!(tenants.status(&a()), TenantStatus::Configured);
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
    assert!(!tenants.apply_event(&b(), active(1)));
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
    assert!(tenants.begin_event(&b()).is_none());
    assert_eq!(tenants.list().len(), 1);
    assert!(tenants.is_configured(&a()) && !tenants.accepts(&b()));
}

#[test]
fn dynamic_mode_learns_new_accounts() {
    let tenants = Tenants::new(TenantMode::Dynamic, &[]);
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
    let epoch = tenants.begin_event(&b()).unwrap();
    // Heard of, not learned: still unknown and not listed.
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
    assert!(tenants.list().is_empty());
    assert!(tenants.apply_if_current(&b(), epoch, active(5)));
    assert_eq!(tenants.status(&b()), TenantStatus::Active);
    assert_eq!(tenants.list(), vec![(b(), active(5))]);
}

#[tokio::test]
async fn a_stale_lookup_never_overwrites_a_newer_event() {
    let tenants = Tenants::new(TenantMode::Static, &[a()]);
    let mut changes = tenants.subscribe();
    let lookup = tenants.begin_event(&a()).unwrap();
    // The account revokes while the lookup is still running.
    assert!(tenants.apply_event(&a(), TenantRecord::with_status(TenantStatus::Revoked, 10)));
    assert!(!tenants.apply_if_current(&a(), lookup, active(11)));
    assert_eq!(tenants.status(&a()), TenantStatus::Revoked);
    let change = changes.try_recv().unwrap();
    assert_eq!(
        change,
        TenantChange {
            appid: a(),
            previous: TenantStatus::Configured,
            status: TenantStatus::Revoked,
        }
    );
    assert!(
        changes.try_recv().is_err(),
        "the stale lookup broadcast nothing"
    );
    // A lookup started after the event applies.
    let fresh = tenants.begin(&a());
    assert!(tenants.apply_if_current(&a(), fresh, active(12)));
    assert_eq!(changes.try_recv().unwrap().status, TenantStatus::Active);
}

#[tokio::test]
async fn unchanged_content_is_not_a_change() {
    let tenants = Tenants::new(TenantMode::Static, &[a()]);
    let mut changes = tenants.subscribe();
    assert!(tenants.apply_event(&a(), active(1)));
    assert!(!tenants.apply_event(&a(), active(2)));
    assert_eq!(tenants.record(&a()).unwrap().updated_at, 2);
    assert_eq!(changes.try_recv().unwrap().status, TenantStatus::Active);
    assert!(changes.try_recv().is_err());
}

#[test]
fn stored_records_are_adopted_when_not_older() {
    let tenants = Tenants::new(TenantMode::Static, &[a()]);
    assert!(tenants.adopt_stored(&a(), TenantRecord::with_status(TenantStatus::Revoked, 100)));
    assert_eq!(tenants.status(&a()), TenantStatus::Revoked);
    // Older than what is held: ignored.
    assert!(!tenants.adopt_stored(&a(), active(99)));
    assert_eq!(tenants.status(&a()), TenantStatus::Revoked);
    assert!(tenants.adopt_stored(&a(), active(100)));
    assert_eq!(tenants.status(&a()), TenantStatus::Active);
    // Static mode: a stored record of an account no longer configured is ignored.
    assert!(!tenants.adopt_stored(&b(), active(500)));
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
}

#[test]
fn single_settings_are_static_without_reconciliation() {
    let s = TenantSettings::single(a());
    assert_eq!(s.mode, TenantMode::Static);
    assert_eq!(s.configured, vec![a()]);
    assert_eq!(s.reconcile_interval, None);
    assert_eq!(
        s.query_auth_retry_delays,
        DEFAULT_QUERY_AUTH_RETRY_DELAYS.to_vec()
    );
    assert_eq!(s.store_sync_interval, Some(DEFAULT_STORE_SYNC_INTERVAL));
}

#[test]
fn a_reload_adds_and_forgets_configured_accounts_in_static_mode() {
    let tenants = Tenants::new(TenantMode::Static, &[a()]);
    assert!(tenants.apply_event(&a(), active(3)));
    let mut changes = tenants.subscribe();
    let (added, removed) = tenants.reconfigure(&[b()]);
    assert_eq!((added, removed), (vec![b()], vec![a()]));
    assert_eq!(tenants.status(&b()), TenantStatus::Configured);
    assert!(tenants.accepts(&b()) && tenants.is_configured(&b()));
    // Forgotten, even though WeChat had confirmed it, and news about it are ignored now.
    assert_eq!(tenants.status(&a()), TenantStatus::Unknown);
    assert!(!tenants.accepts(&a()));
    assert!(!tenants.apply_event(&a(), active(4)));
    assert_eq!(
        tenants.list(),
        vec![(b(), TenantRecord::with_status(TenantStatus::Configured, 0))]
    );
    let mut seen = vec![changes.try_recv().unwrap(), changes.try_recv().unwrap()];
    seen.sort_by(|x, y| x.appid.cmp(&y.appid));
    assert_eq!(
        seen,
        vec![
            TenantChange {
                appid: a(),
                previous: TenantStatus::Active,
                status: TenantStatus::Unknown
            },
            TenantChange {
                appid: b(),
                previous: TenantStatus::Unknown,
                status: TenantStatus::Configured
            },
        ]
    );
    // The same list again changes nothing.
    assert_eq!(tenants.reconfigure(&[b()]), (vec![], vec![]));
    assert!(changes.try_recv().is_err());
}

#[test]
fn a_reload_in_dynamic_mode_keeps_what_wechat_confirmed() {
    let tenants = Tenants::new(TenantMode::Dynamic, &[a(), b()]);
    assert!(tenants.apply_event(&a(), active(3)));
    tenants.reconfigure(&[]);
    // Learned from WeChat: still a tenant; only configured, never confirmed: forgotten.
    assert_eq!(tenants.status(&a()), TenantStatus::Active);
    assert_eq!(tenants.status(&b()), TenantStatus::Unknown);
    assert!(!tenants.is_configured(&a()) && tenants.accepts(&b()));
}

#[tokio::test]
async fn a_lookup_under_way_about_a_forgotten_account_is_dropped() {
    let tenants = Tenants::new(TenantMode::Dynamic, &[a()]);
    let epoch = tenants.begin(&a());
    tenants.reconfigure(&[]);
    assert!(!tenants.apply_if_current(&a(), epoch, active(9)));
    assert_eq!(tenants.status(&a()), TenantStatus::Unknown);
}
