//! Audit lines: one log event per security-relevant action, on the target `audit` at level
//! `info`, so that they can be kept apart (`RUST_LOG=warn,audit=info`, or a filter on
//! `"target":"audit"` in JSON logs). Inside a request they carry its `request_id` (the request
//! span); every one has an `event` field:
//!
//! | `event` | where | fields |
//! |---|---|---|
//! | `login` | a session was created (`callback`) | `appid` (the official account), `session` (the session's fingerprint, [`SessionId::fingerprint`]), `user` ([`user`]: a pseudonym of the openid) |
//! | `logout` | a session was ended by the user (`logout`) | `appid` (the official account), `session` |
//! | `push` | a platform push to `events`: `outcome = "accepted"` with `info_type` (and `authorizer_appid` for authorization changes), or `outcome = "refused"` with `reason` (the error code: `push_forged`, `push_malformed`, …) | |
//! | `component_token_refresh` | a new `component_access_token` was fetched | `appid` (the platform), `expires_in` |
//!
//! The `appid` is in every `login` and `logout` line whatever `tenants.log_label` says: an
//! audit line must name the account, and it is a field, not a label of bounded cardinality.
//!
//! Never in an audit line (nor in any other): a secret, token, ticket, code, `state`, cookie
//! value, session id, JWT, openid, unionid or nickname. The openid is personal data: the `user`
//! pseudonym lets an operator who knows an openid find its logins (`user` of that openid)
//! without the log holding it.

use sha2::{Digest as _, Sha256};

use crate::identity::Identity;
use crate::ids::{AppId, OpenId};
use crate::session::SessionId;

/// A pseudonym of an openid for logs: the first 8 bytes of its SHA-256, in hex.
pub fn user(openid: &OpenId) -> String {
    let digest = Sha256::digest(openid.as_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A login about to become a session: what its audit line names (taken before the identity
/// moves into the session record).
#[derive(Debug)]
pub(crate) struct Login {
    appid: AppId,
    user: String,
}

impl Login {
    /// The login of `identity`.
    pub(crate) fn of(identity: &Identity) -> Self {
        Self {
            appid: identity.appid.clone(),
            user: user(&identity.openid),
        }
    }

    /// The `login` audit line, once the session exists.
    pub(crate) fn completed(&self, session: &SessionId) {
        tracing::info!(
            target: "audit",
            event = "login",
            appid = %self.appid,
            session = %session.fingerprint(),
            user = %self.user,
            "login completed"
        );
    }
}

/// The `logout` audit line.
pub(crate) fn logout(appid: &str, session: &SessionId) {
    tracing::info!(
        target: "audit",
        event = "logout",
        appid,
        session = %session.fingerprint(),
        "logged out"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_pseudonym_is_stable_short_and_not_the_openid() {
        let openid = OpenId::new("oUser-0000000000000000000001");
        assert_eq!(
            user(&openid),
            user(&OpenId::new("oUser-0000000000000000000001"))
        );
        assert_ne!(
            user(&openid),
            user(&OpenId::new("oUser-0000000000000000000002"))
        );
        assert_eq!(user(&openid).len(), 16);
        assert!(!user(&openid).contains("oUser"));
    }
}
