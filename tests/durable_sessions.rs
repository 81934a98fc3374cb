//! The durable session store on real files in a temporary directory: what survives a restart
//! and a crash, the lazy idle timestamps, the purge, the capacity bound, the revocation of an
//! appid, and a file that cannot be read. (The behaviour it shares with every backend is in
//! `tests/session_conformance.rs`; the real binary killed with SIGKILL is in
//! `tests/binary_e2e.rs`.)
//!
//! A crash is simulated by copying the file while the store that wrote it is still open: the
//! copy holds exactly what a process killed at that moment leaves behind (every completed write,
//! no clean close), and it is opened in another directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{TempDir, bounded, user};
use wechat_oauth_proxy::ids::AppId;
use wechat_oauth_proxy::session::durable::FILE_NAME;
use wechat_oauth_proxy::session::{
    DurableSettings, DurableStore, FlowKey, SessionRecord, SessionSettings, SessionStore,
};

/// Writes that happen only when a test asks for them (no timer fires during a test).
fn quiet() -> DurableSettings {
    DurableSettings {
        touch_interval: Duration::from_secs(3600),
        purge_interval: Duration::from_secs(3600),
        ..DurableSettings::default()
    }
}

/// Sessions that end after 4 s without use. Stored times are whole seconds (a use at 3.2 s is
/// stored as at least 3 s, and a restored session's age is rounded up), so the idle tests use
/// the session at 3.2 s, when it would have 0.8 s left, and look again at 4.5 s: alive only if
/// that use was stored.
fn idle_4s() -> SessionSettings {
    SessionSettings {
        ttl: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(4),
        ..SessionSettings::default()
    }
}

async fn open(dir: &Path, settings: SessionSettings, durable: DurableSettings) -> DurableStore {
    bounded(DurableStore::open(dir, settings, durable))
        .await
        .unwrap()
}

/// What a process killed now would leave: a copy of the file, in a fresh directory.
fn crash_copy(store: &DurableStore, label: &str) -> TempDir {
    let copy = TempDir::new(label);
    std::fs::create_dir_all(&copy.0).unwrap();
    std::fs::copy(store.path(), copy.0.join(FILE_NAME)).unwrap();
    copy
}

/// Polls `condition` every 100 ms for at most 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    for _ in 0..100 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test]
async fn a_restart_keeps_sessions_and_redeemed_logins() {
    let dir = TempDir::new("durable-restart");
    let store = open(&dir.0, SessionSettings::default(), quiet()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let record = SessionRecord::new(user(&format!("o-restart-{i}")));
        ids.push((bounded(store.create(record.clone())).await.unwrap(), record));
    }
    let logged_out = bounded(store.create(SessionRecord::new(user("o-out"))))
        .await
        .unwrap();
    bounded(store.delete(&logged_out)).await.unwrap();
    let (done, pending) = (FlowKey::new("state-done"), FlowKey::new("state-pending"));
    let ttl = Duration::from_secs(600);
    assert!(bounded(store.consume_flow(&done, ttl)).await.unwrap());
    bounded(store.remember_completed(&done, &ids[0].0, ttl))
        .await
        .unwrap();
    assert!(bounded(store.consume_flow(&pending, ttl)).await.unwrap());
    drop(store);

    let store = open(&dir.0, SessionSettings::default(), quiet()).await;
    for (id, record) in &ids {
        let loaded = bounded(store.load(id)).await.unwrap().expect("kept");
        assert_eq!(loaded.identity, record.identity);
        assert_eq!(loaded.created_at, record.created_at);
    }
    assert_eq!(bounded(store.load(&logged_out)).await.unwrap(), None);
    // A duplicate callback after the restart still finds the session; a redeemed state stays
    // redeemed.
    assert_eq!(
        bounded(store.completed(&done)).await.unwrap(),
        Some(ids[0].0.clone())
    );
    assert!(!bounded(store.consume_flow(&done, ttl)).await.unwrap());
    assert!(!bounded(store.consume_flow(&pending, ttl)).await.unwrap());
    assert_eq!(bounded(store.stored_session_count()).await.unwrap(), 3);
}

#[tokio::test]
async fn a_crash_keeps_every_session_create_returned() {
    let dir = TempDir::new("durable-crash");
    let store = open(&dir.0, SessionSettings::default(), quiet()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let record = SessionRecord::new(user(&format!("o-crash-{i}")));
        ids.push(bounded(store.create(record)).await.unwrap());
    }
    // A login's marker rides on the commit of the login's session.
    let key = FlowKey::new("state-crash");
    assert!(
        bounded(store.consume_flow(&key, Duration::from_secs(600)))
            .await
            .unwrap()
    );
    let last = bounded(store.create(SessionRecord::new(user("o-last"))))
        .await
        .unwrap();
    bounded(store.delete(&ids[0])).await.unwrap();

    let crashed = crash_copy(&store, "durable-crash-copy");
    let reopened = open(&crashed.0, SessionSettings::default(), quiet()).await;
    for id in ids[1..].iter().chain([&last]) {
        assert!(bounded(reopened.load(id)).await.unwrap().is_some());
    }
    assert_eq!(bounded(reopened.load(&ids[0])).await.unwrap(), None);
    assert!(
        !bounded(reopened.consume_flow(&key, Duration::from_secs(600)))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_restored_session_keeps_its_absolute_deadline() {
    let dir = TempDir::new("durable-deadline");
    // Stored times are whole seconds and a restored age is rounded up, so a restored session
    // may end up to 2 s before `creation + ttl` — never after.
    let settings = SessionSettings {
        ttl: Duration::from_secs(6),
        ..SessionSettings::default()
    };
    let store = open(&dir.0, settings.clone(), quiet()).await;
    let created = std::time::Instant::now();
    let id = bounded(store.create(SessionRecord::new(user("o-deadline"))))
        .await
        .unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let store = open(&dir.0, settings, quiet()).await;
    assert!(bounded(store.load(&id)).await.unwrap().is_some());
    // Busy, it still ends 6 s after its creation, not 6 s after the restart (8 s or more).
    eventually("the absolute deadline", || async {
        bounded(store.load(&id)).await.unwrap().is_none()
    })
    .await;
    assert!(
        created.elapsed() < Duration::from_millis(7500),
        "lived {:?}",
        created.elapsed()
    );
}

#[tokio::test]
async fn idle_timestamps_are_written_lazily_and_survive_a_restart() {
    let dir = TempDir::new("durable-lazy");
    let settings = idle_4s();
    let store = open(&dir.0, settings.clone(), quiet()).await;
    let id = bounded(store.create(SessionRecord::new(user("o-lazy"))))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let created = bounded(store.stored_record(&id)).await.unwrap().unwrap();
    tokio::time::sleep_until(started + Duration::from_millis(3200)).await;
    for _ in 0..50 {
        assert!(bounded(store.load(&id)).await.unwrap().is_some());
    }
    // Used 50 times: nothing written yet.
    let stored = bounded(store.stored_record(&id)).await.unwrap().unwrap();
    assert_eq!(stored.last_seen, created.last_seen);
    // A clean close writes it; after the restart the session lives past `created + idle`.
    drop(store);
    let store = open(&dir.0, settings, quiet()).await;
    let stored = bounded(store.stored_record(&id)).await.unwrap().unwrap();
    assert!(stored.last_seen >= created.last_seen + 3, "{stored:?}");
    tokio::time::sleep_until(started + Duration::from_millis(4500)).await;
    assert!(
        bounded(store.load(&id)).await.unwrap().is_some(),
        "the restored idle timestamp was the creation time"
    );
}

#[tokio::test]
async fn idle_timestamps_reach_the_file_without_a_close_and_survive_a_crash() {
    let dir = TempDir::new("durable-touch");
    let settings = idle_4s();
    let touching = DurableSettings {
        touch_interval: Duration::from_millis(300),
        ..quiet()
    };
    let store = open(&dir.0, settings.clone(), touching).await;
    let id = bounded(store.create(SessionRecord::new(user("o-touch"))))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let created = bounded(store.stored_record(&id)).await.unwrap().unwrap();
    tokio::time::sleep_until(started + Duration::from_millis(3200)).await;
    assert!(bounded(store.touch(&id)).await.unwrap());
    eventually("the idle timestamp written", || async {
        let stored = bounded(store.stored_record(&id)).await.unwrap().unwrap();
        stored.last_seen > created.last_seen
    })
    .await;

    let crashed = crash_copy(&store, "durable-touch-copy");
    tokio::time::sleep_until(started + Duration::from_millis(4500)).await;
    let reopened = open(&crashed.0, settings, quiet()).await;
    assert!(
        bounded(reopened.load(&id)).await.unwrap().is_some(),
        "idle since its creation, it would have expired"
    );
}

#[tokio::test]
async fn expired_records_are_purged_in_bounded_rounds() {
    let dir = TempDir::new("durable-purge");
    let settings = SessionSettings {
        ttl: Duration::from_secs(2),
        ..SessionSettings::default()
    };
    let purging = DurableSettings {
        purge_interval: Duration::from_millis(100),
        purge_batch: 2,
        ..quiet()
    };
    let store = open(&dir.0, settings, purging).await;
    for i in 0..7 {
        let record = SessionRecord::new(user(&format!("o-purge-{i}")));
        bounded(store.create(record)).await.unwrap();
    }
    assert_eq!(bounded(store.stored_session_count()).await.unwrap(), 7);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = bounded(store.create(SessionRecord::new(user("o-fresh"))))
        .await
        .unwrap();
    eventually("the purge of the expired sessions", || async {
        bounded(store.stored_session_count()).await.unwrap() == 1
    })
    .await;
    assert!(bounded(store.load(&fresh)).await.unwrap().is_some());
    assert!(
        bounded(store.stored_record(&fresh))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn sessions_evicted_for_capacity_leave_the_file_too() {
    let dir = TempDir::new("durable-capacity");
    let settings = SessionSettings {
        capacity: 3,
        ..SessionSettings::default()
    };
    let store = open(&dir.0, settings.clone(), quiet()).await;
    let mut last = None;
    for i in 0..10 {
        let record = SessionRecord::new(user(&format!("o-cap-{i}")));
        last = Some(bounded(store.create(record)).await.unwrap());
    }
    store.run_pending_tasks().await;
    bounded(store.flush()).await.unwrap();
    let stored = bounded(store.stored_session_count()).await.unwrap();
    assert!(stored <= 3, "{stored} sessions stored");
    drop(store);
    let store = open(&dir.0, settings, quiet()).await;
    assert!(bounded(store.load(&last.unwrap())).await.unwrap().is_some());
}

#[tokio::test]
async fn ending_an_appid_is_durable() {
    let dir = TempDir::new("durable-appid");
    let store = open(&dir.0, SessionSettings::default(), quiet()).await;
    let revoked = AppId::from("wxrevoked000000001".to_owned());
    let mut ended = Vec::new();
    for i in 0..3 {
        let mut record = SessionRecord::new(user(&format!("o-rev-{i}")));
        record.identity.appid = revoked.clone();
        ended.push(bounded(store.create(record)).await.unwrap());
    }
    let kept = bounded(store.create(SessionRecord::new(user("o-kept"))))
        .await
        .unwrap();
    assert_eq!(bounded(store.end_sessions_of(&revoked)).await.unwrap(), 3);
    let crashed = crash_copy(&store, "durable-appid-copy");
    drop(store);
    for dir in [&dir, &crashed] {
        let store = open(&dir.0, SessionSettings::default(), quiet()).await;
        for id in &ended {
            assert_eq!(bounded(store.load(id)).await.unwrap(), None);
        }
        assert!(bounded(store.load(&kept)).await.unwrap().is_some());
    }
}

/// Log lines written while a test runs (a thread-local subscriber).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_unreadable_file_is_reported_moved_aside_and_replaced() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let garbage = b"this is not a database, it is a note someone saved here".repeat(100);
    // A file of another program, and a database of the right kind but another layout.
    let foreign = TempDir::new("durable-foreign-src");
    std::fs::create_dir_all(&foreign.0).unwrap();
    {
        let db = redb::Database::create(foreign.0.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let table: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("sessions");
        txn.open_table(table).unwrap().insert("a", "b").unwrap();
        txn.commit().unwrap();
    }
    let foreign_bytes = std::fs::read(foreign.0.join(FILE_NAME)).unwrap();

    for (label, bytes) in [("garbage", garbage), ("foreign", foreign_bytes)] {
        let dir = TempDir::new(&format!("durable-corrupt-{label}"));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join(FILE_NAME);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();

        let store = open(&dir.0, SessionSettings::default(), quiet()).await;
        let files = files_in(&dir.0);
        let aside = files
            .iter()
            .find(|f| f.starts_with("sessions.redb.corrupt-"))
            .unwrap_or_else(|| panic!("{label}: not moved aside: {files:?}"));
        assert_eq!(std::fs::read(dir.0.join(aside)).unwrap(), bytes, "{label}");
        let log = logs.text();
        assert!(log.contains("ERROR"), "{label}: {log}");
        assert!(log.contains(&path.display().to_string()), "{label}: {log}");

        // The fresh store works and is durable.
        let id = bounded(store.create(SessionRecord::new(user("o-fresh"))))
            .await
            .unwrap();
        drop(store);
        let store = open(&dir.0, SessionSettings::default(), quiet()).await;
        assert!(bounded(store.load(&id)).await.unwrap().is_some(), "{label}");
        assert_eq!(files_in(&dir.0).len(), 2, "{label}: {:?}", files_in(&dir.0));
    }
}

#[tokio::test]
async fn a_file_open_in_another_store_is_refused_not_moved() {
    let dir = TempDir::new("durable-in-use");
    let store = open(&dir.0, SessionSettings::default(), quiet()).await;
    let id = bounded(store.create(SessionRecord::new(user("o-first"))))
        .await
        .unwrap();
    let second = bounded(DurableStore::open(
        &dir.0,
        SessionSettings::default(),
        quiet(),
    ))
    .await
    .unwrap_err();
    assert!(second.to_string().contains("in use"), "{second}");
    assert_eq!(files_in(&dir.0), vec![FILE_NAME.to_owned()]);
    assert!(bounded(store.load(&id)).await.unwrap().is_some());
}

#[tokio::test]
async fn the_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("durable-private");
    let store = open(&dir.0.join("state"), SessionSettings::default(), quiet()).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.path()), 0o600);
    assert_eq!(mode(&dir.0.join("state")), 0o700);
}
