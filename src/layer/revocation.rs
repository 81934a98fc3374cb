//! `tenants.on_unauthorized = "end_sessions"`: when an official account revokes the platform
//! (an `unauthorized` push, or reconciliation finding it gone), its sessions end at once.
//!
//! The WeChat side broadcasts every tenant status change ([`Tenants::subscribe`]); this task
//! listens and asks the session store to end the account's sessions
//! ([`SessionStore::end_sessions_of`]). `wechat` knows nothing about sessions and `session`
//! nothing about WeChat: the layer connects them here.

use std::sync::Arc;

use tokio::{sync::broadcast::error::RecvError, task::JoinHandle};

use crate::{
    ids::AppId,
    session::SessionStore,
    wechat::{
        AuthorizerAppId,
        tenants::{TenantStatus, Tenants},
    },
};

/// Spawns the task: every change to [`TenantStatus::Revoked`] ends that account's sessions. A
/// subscriber that fell behind re-reads the registry and ends the sessions of every revoked
/// account. Runs until aborted (or the registry is gone).
pub(super) fn spawn(tenants: Tenants, sessions: Arc<dyn SessionStore>) -> JoinHandle<()> {
    let mut changes = tenants.subscribe();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(change)
                    if change.status == TenantStatus::Revoked
                        && change.previous != TenantStatus::Revoked =>
                {
                    end_sessions(sessions.as_ref(), &change.appid).await;
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "tenant changes missed; re-reading the registry");
                    for (appid, record) in tenants.list() {
                        if record.status == TenantStatus::Revoked {
                            end_sessions(sessions.as_ref(), &appid).await;
                        }
                    }
                }
                Err(RecvError::Closed) => break,
            }
        }
    })
}

async fn end_sessions(sessions: &dyn SessionStore, appid: &AuthorizerAppId) {
    match sessions.end_sessions_of(&AppId::from(appid)).await {
        Ok(ended) => {
            crate::metrics::sessions_ended(crate::metrics::SessionEnd::Revoked, ended);
            tracing::info!(authorizer_appid = %appid, ended, "official account revoked the platform: its sessions ended");
        }
        Err(e) => {
            tracing::error!(authorizer_appid = %appid, error = %e, "could not end the sessions of a revoked official account");
        }
    }
}
