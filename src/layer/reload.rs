//! Reloading the parts of the layer's settings that change often — the skip rules, the API
//! prefixes, CORS preflights and the tenants — while it serves: [`WeChatAuthLayer::reload`].
//!
//! The layer and every service it made share one [`Live`]: the state in force (an
//! [`ArcSwap`]) that each request loads **once** (one atomic load) and keeps to its end. A
//! reload validates the new settings exactly as the builder does (the same `assemble`), builds
//! a whole new state around the same collaborators (WeChat side, session store, cookie codec,
//! JWT issuer) and swaps it in: requests already under way finish with the settings they
//! started with, the next ones use the new settings, and a refused reload changes nothing.
//! Nothing here touches connections; the sidecar calls this on `SIGHUP` (`src/app/reload.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::{
    BuildError, DispatchSettings, LayerSettings, WeChatAuthLayer, builder::assemble,
    state::AuthState, tenant::TenantRouting,
};

/// The parts of [`LayerSettings`] a [`WeChatAuthLayer::reload`] replaces. The rest (public URL,
/// reserved prefix, scope, identity headers, flow lifetime, forward auth) and the collaborators
/// are fixed for the layer's life.
#[derive(Clone, Debug, Default)]
pub struct ReloadableSettings {
    /// Skip rules, API prefixes and `skip_preflight`. The reserved `prefix` must stay what it
    /// is (WeChat knows the callback and events URLs under it).
    pub dispatch: DispatchSettings,
    /// The tenant routing: hosts, names, audiences, the configured accounts, host pattern, path
    /// prefix, `allow_query_appid`, `log_label`. Present exactly when it was at build time, with
    /// the same `on_unauthorized` (its background task is started once).
    pub tenants: Option<TenantRouting>,
}

impl ReloadableSettings {
    /// The reloadable part of `settings`.
    pub fn of(settings: &LayerSettings) -> Self {
        Self {
            dispatch: settings.dispatch.clone(),
            tenants: settings.tenants.clone(),
        }
    }
}

/// The state in force, shared by a layer, its clones and every service they made.
#[derive(Debug)]
pub(super) struct Live {
    current: ArcSwap<AuthState>,
    /// One reload at a time (each reads the state in force, then replaces it).
    reloading: Mutex<()>,
}

impl Live {
    pub(super) fn new(state: AuthState) -> Self {
        Self {
            current: ArcSwap::from_pointee(state),
            reloading: Mutex::new(()),
        }
    }

    /// The state in force now (one atomic load); a request keeps it to its end.
    pub(super) fn load(&self) -> Arc<AuthState> {
        self.current.load_full()
    }
}

impl WeChatAuthLayer {
    /// Replaces the skip rules, API prefixes and tenant routing, atomically, for this layer, its
    /// clones and every service they made: requests under way finish with the settings they
    /// started with, the next ones get the new ones. The new settings are validated exactly as
    /// [`build`](super::WeChatAuthLayerBuilder::build) validates them; with tenants, the WeChat
    /// side's registry learns the newly listed accounts and forgets the ones no longer listed
    /// ([`Tenants::reconfigure`](crate::wechat::tenants::Tenants::reconfigure)). Connections
    /// are untouched.
    ///
    /// # Errors
    /// The [`BuildError`] the builder would give for these settings, or
    /// [`BuildError::NotReloadable`] when they change what only a new layer can (the reserved
    /// prefix; tenants added or removed altogether; `on_unauthorized`). Nothing changes then.
    pub fn reload(&self, new: ReloadableSettings) -> Result<(), BuildError> {
        let _one_at_a_time = self
            .live
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.live.load();
        let fixed = &current.settings;
        if new.dispatch.prefix != fixed.dispatch.prefix {
            return Err(BuildError::NotReloadable("prefix"));
        }
        match (&fixed.tenants, &new.tenants) {
            (None, None) => {}
            (Some(old), Some(new)) if old.on_unauthorized == new.on_unauthorized => {}
            (Some(_), Some(_)) => return Err(BuildError::NotReloadable("tenants.on_unauthorized")),
            _ => return Err(BuildError::NotReloadable("tenants")),
        }
        let settings = LayerSettings {
            dispatch: new.dispatch,
            tenants: new.tenants,
            ..fixed.clone()
        };
        let state = assemble(
            settings,
            current.wechat.clone(),
            Arc::clone(&current.sessions),
            current.cookies.clone(),
            current.jwt.clone(),
            // The lists are swapped on their own (`set_access_lists`): the new state shares them.
            Arc::clone(&current.access),
            current.qr.clone(),
        )?;
        if let Some(routing) = &state.settings.tenants {
            let appids: Vec<_> = routing.sites.iter().map(|s| s.appid.clone()).collect();
            let (added, removed) = current.wechat.tenants().reconfigure(&appids);
            if !added.is_empty() || !removed.is_empty() {
                tracing::info!(
                    added = added.len(),
                    removed = removed.len(),
                    "configured official accounts changed"
                );
            }
        }
        self.live.current.store(Arc::new(state));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
