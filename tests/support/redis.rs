//! A throw-away `redis-server` per test: started on a free loopback port with persistence off,
//! waited for with a bounded retry loop, killed (and reaped) on drop.
//!
//! If `redis-server` is not on `PATH` the test FAILS with a message saying how to install it:
//! these backends are never silently left untested.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wechat_oauth_proxy::ids::AppId;
use wechat_oauth_proxy::session::{
    FlowKey, RedisSessionStore, SessionId, SessionRecord, SessionSettings, SessionStore, StoreError,
};

/// How many times a start is attempted (another process may grab the free port first).
const START_ATTEMPTS: usize = 5;
/// Readiness polls per attempt, [`POLL`] apart (5 s in all).
const READY_POLLS: usize = 100;
const POLL: Duration = Duration::from_millis(50);

/// A `redis-server` child process owned by the test.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free `127.0.0.1` port and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`start`](Self::start) with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wop-redis-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            if server.spawn_on(port) {
                return server;
            }
        }
        panic!("redis-server did not come up after {START_ATTEMPTS} attempts");
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (the port stays reserved for [`restart`](Self::restart)).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; retry a little in case the kernel is slow to free it.
        for _ in 0..START_ATTEMPTS {
            if self.spawn_on(self.port) {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Spawns on `port` and waits for `PING`; `false` if the process exited (port taken).
    fn spawn_on(&mut self, port: u16) -> bool {
        let port_text = port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port_text])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`redis-server` is not on PATH. The Redis backend tests need a real server: \
                 run the tests with `scripts/test.sh`, which installs it (or `apt-get install -y \
                 redis-server` on Debian/Ubuntu). These tests never skip."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.port = port;
        for _ in 0..READY_POLLS {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_status)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if answers_ping(port) {
                return true;
            }
            std::thread::sleep(POLL);
        }
        self.stop();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One bounded `PING` round trip over a raw socket.
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // `+PONG`, or `-NOAUTH …` from a server started with `--requirepass`: either way it serves.
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok()
        && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
}

/// Sends one raw command (RESP inline form) and returns the first reply line; for test setup
/// that must bypass the stores (e.g. `CLIENT PAUSE`).
pub fn raw_command(port: u16, command: &str) -> String {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(command.as_bytes()).unwrap();
    stream.write_all(b"\r\n").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.len() < 4096 {
        stream.read_exact(&mut byte).unwrap();
        if byte[0] == b'\n' {
            break;
        }
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}

/// A [`RedisSessionStore`] that owns its server, so a store handed out as
/// `Arc<dyn SessionStore>` keeps the server alive exactly as long as it is used.
#[derive(Debug)]
pub struct ServerBoundSessionStore {
    store: RedisSessionStore,
    _server: Arc<RedisServer>,
}

impl ServerBoundSessionStore {
    /// A fresh server and a store on it (random key prefix).
    pub async fn start(settings: SessionSettings) -> Self {
        let server = Arc::new(RedisServer::start());
        let prefix = format!("test{:08x}:", rand::random::<u32>());
        let store = super::bounded(RedisSessionStore::new(&server.url(), &prefix, settings))
            .await
            .expect("connect to the test redis-server");
        Self {
            store,
            _server: server,
        }
    }
}

#[async_trait]
impl SessionStore for ServerBoundSessionStore {
    async fn create(&self, record: SessionRecord) -> Result<SessionId, StoreError> {
        self.store.create(record).await
    }
    async fn load(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.store.load(id).await
    }
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.store.delete(id).await
    }
    async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.store.touch(id).await
    }
    async fn consume_flow(&self, key: &FlowKey, ttl: Duration) -> Result<bool, StoreError> {
        self.store.consume_flow(key, ttl).await
    }
    async fn remember_completed(
        &self,
        key: &FlowKey,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.store.remember_completed(key, session, ttl).await
    }
    async fn completed(&self, key: &FlowKey) -> Result<Option<SessionId>, StoreError> {
        self.store.completed(key).await
    }
    async fn end_sessions_of(&self, appid: &AppId) -> Result<u64, StoreError> {
        self.store.end_sessions_of(appid).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
