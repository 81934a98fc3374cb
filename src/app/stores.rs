//! Where sessions and the platform state (ticket, component token) live: in memory and the
//! state directory (sessions in `sessions.redb` by default, or in memory only), or in Redis
//! (feature `redis`) so that several instances share them.

use std::sync::Arc;

use super::{AppError, setup};
use crate::config::{Config, StoreKind};
use crate::session::{DurableSettings, DurableStore, MemoryStore, SessionStore, TicketStore};
use crate::wechat::persist::{FileStore, PlatformStore};

/// The session store of `session.store`. The durable store reads its file here (the time this
/// takes with many sessions is in BENCHMARKS.md).
pub(super) async fn session_store(config: &Config) -> Result<Arc<dyn SessionStore>, AppError> {
    let settings = config.session.session_settings();
    match config.session.store {
        StoreKind::Durable => Ok(Arc::new(
            DurableStore::open(
                &config.server.state_dir,
                settings,
                DurableSettings::default(),
            )
            .await
            .map_err(|e| setup("session")(e.to_string()))?,
        )),
        StoreKind::Memory => Ok(Arc::new(MemoryStore::new(settings))),
        StoreKind::Redis => redis::session_store(config, settings).await,
    }
}

/// The platform store: the state directory by default; Redis when sessions are in Redis, so
/// that every instance shares one ticket, one token and one refresh lock.
pub(super) async fn platform_store(config: &Config) -> Result<Arc<dyn PlatformStore>, AppError> {
    match config.session.store {
        StoreKind::Durable | StoreKind::Memory => Ok(Arc::new(
            FileStore::new(config.server.state_dir.clone())
                .map_err(|e| setup("state_dir")(e.to_string()))?,
        )),
        StoreKind::Redis => redis::platform_store(config).await,
    }
}

/// Where the desktop QR login's tickets live when `[qr]` is on: `None` (the layer's bounded
/// memory store) with `durable` or `memory` sessions — tickets live five minutes at most, so
/// a restart losing them costs a rescan —, Redis with Redis sessions, so that any instance can
/// answer the phone and the desktop.
pub(super) async fn ticket_store(
    config: &Config,
) -> Result<Option<Arc<dyn TicketStore>>, AppError> {
    match config.session.store {
        _ if !config.qr.enabled => Ok(None),
        StoreKind::Durable | StoreKind::Memory => Ok(None),
        StoreKind::Redis => redis::ticket_store(config).await.map(Some),
    }
}

/// What [`session_store`] and [`platform_store`] would refuse before connecting anywhere or
/// opening a file (like the platform's state files, the session database is only opened at
/// start).
pub(super) fn check(config: &Config) -> Result<(), AppError> {
    match config.session.store {
        StoreKind::Durable | StoreKind::Memory => Ok(()),
        StoreKind::Redis => redis::check(config),
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::sync::Arc;

    use super::super::{AppError, refused, setup};
    use crate::config::Config;
    use crate::session::redis::RedisSessionStore;
    use crate::session::{RedisTicketStore, SessionSettings, SessionStore, TicketStore};
    use crate::wechat::persist::PlatformStore;
    use crate::wechat::redis::RedisPlatformStore;

    /// Key prefix of everything this proxy keeps in Redis.
    const REDIS_PREFIX: &str = "wxauth:";

    pub(super) async fn session_store(
        config: &Config,
        settings: SessionSettings,
    ) -> Result<Arc<dyn SessionStore>, AppError> {
        let url = config.session.redis_url().map_err(refused("session"))?;
        let store = RedisSessionStore::new(url.expose_secret(), REDIS_PREFIX, settings)
            .await
            .map_err(|e| setup("session")(e.to_string()))?;
        Ok(Arc::new(store))
    }

    pub(super) async fn platform_store(
        config: &Config,
    ) -> Result<Arc<dyn PlatformStore>, AppError> {
        let url = config.session.redis_url().map_err(refused("session"))?;
        let store = RedisPlatformStore::new(url.expose_secret(), REDIS_PREFIX)
            .await
            .map_err(|e| setup("wechat")(e.to_string()))?;
        Ok(Arc::new(store))
    }

    pub(super) async fn ticket_store(config: &Config) -> Result<Arc<dyn TicketStore>, AppError> {
        let url = config.session.redis_url().map_err(refused("session"))?;
        let conn =
            crate::redis_util::connect(url.expose_secret(), crate::redis_util::DEFAULT_OP_TIMEOUT)
                .await
                .map_err(setup("qr"))?;
        Ok(Arc::new(RedisTicketStore::new(
            conn,
            REDIS_PREFIX,
            config.qr.max_pending,
        )))
    }

    pub(super) fn check(config: &Config) -> Result<(), AppError> {
        config
            .session
            .redis_url()
            .map(drop)
            .map_err(refused("session"))
    }
}

/// `store = "redis"` without the `redis` feature: refused.
#[cfg(not(feature = "redis"))]
mod redis {
    use std::sync::Arc;

    use super::super::{AppError, setup};
    use crate::config::Config;
    use crate::session::{SessionSettings, SessionStore, TicketStore};
    use crate::wechat::persist::PlatformStore;

    fn not_built() -> AppError {
        setup("session")("store = \"redis\" needs a build with the `redis` feature".into())
    }

    pub(super) async fn session_store(
        _: &Config,
        _: SessionSettings,
    ) -> Result<Arc<dyn SessionStore>, AppError> {
        Err(not_built())
    }

    pub(super) async fn platform_store(_: &Config) -> Result<Arc<dyn PlatformStore>, AppError> {
        Err(not_built())
    }

    pub(super) async fn ticket_store(_: &Config) -> Result<Arc<dyn TicketStore>, AppError> {
        Err(not_built())
    }

    pub(super) fn check(_: &Config) -> Result<(), AppError> {
        Err(not_built())
    }
}
