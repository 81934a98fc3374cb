//! Pending login flows: the server-side record behind an OAuth `state`, and the small
//! browser-side payload (flow cookie) that binds the flow to the browser that started it.
//!
//! The layer generates a [`FlowBinding`] when a login starts, stores it in the [`LoginFlow`]
//! (server side, under the state as [`FlowKey`]) and in the [`FlowCookie`] (browser side). At the
//! callback it takes the flow by state and checks that the browser presents the same binding —
//! a state stolen from another browser is useless.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::return_path::ReturnPath;
use crate::secret_type;

secret_type!(
    /// The key of a pending login flow: the OAuth `state` string as the layer generated it.
    ///
    /// Defined here (not `wechat::OAuthState`) because `session/` knows nothing about WeChat;
    /// the layer converts.
    FlowKey
);

secret_type!(
    /// An opaque random value binding a login flow to the browser that started it.
    ///
    /// Kept in the [`LoginFlow`] on the server and in the encrypted flow cookie in the browser.
    FlowBinding
);

impl FlowBinding {
    /// A fresh random binding (128 bits from the OS CSPRNG, base64url).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::new(URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The server-side record of a login in progress (stored under its [`FlowKey`], single use).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    /// Where to send the browser once the login completes.
    pub return_path: ReturnPath,
    /// When the flow started (unix seconds).
    pub created_at: u64,
    /// The browser binding the callback must present in its flow cookie.
    pub binding: FlowBinding,
}

/// Maximum number of pending flow bindings a browser keeps; older ones are dropped so that
/// abandoned logins (several tabs, back button) cannot make the cookie grow without bound.
pub const MAX_PENDING_FLOWS: usize = 3;

/// The payload of the flow cookie: the bindings of this browser's pending logins, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCookie {
    #[serde(rename = "b")]
    bindings: Vec<FlowBinding>,
}

impl FlowCookie {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a binding, keeping only the [`MAX_PENDING_FLOWS`] most recent ones.
    pub fn push(&mut self, binding: FlowBinding) {
        self.bindings.push(binding);
        let excess = self.bindings.len().saturating_sub(MAX_PENDING_FLOWS);
        self.bindings.drain(..excess);
    }

    /// Whether `binding` is one of this browser's pending flows (constant-time per comparison).
    pub fn contains(&self, binding: &FlowBinding) -> bool {
        // Compare against every entry (no early exit) so timing does not reveal the position.
        self.bindings
            .iter()
            .fold(false, |found, b| found | (b == binding))
    }

    /// Removes `binding` (after its flow completed); `true` when it was present.
    pub fn remove(&mut self, binding: &FlowBinding) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| b != binding);
        before != self.bindings.len()
    }

    /// Whether no flow is pending (the cookie can then be removed).
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Number of pending bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Drops entries beyond the cap (used after decoding a cookie we did not write ourselves).
    pub(crate) fn enforce_cap(&mut self) {
        let excess = self.bindings.len().saturating_sub(MAX_PENDING_FLOWS);
        self.bindings.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_cookie_keeps_the_three_most_recent() {
        let all: Vec<FlowBinding> = (0..5).map(|_| FlowBinding::generate()).collect();
        let mut cookie = FlowCookie::new();
        for b in &all {
            cookie.push(b.clone());
        }
        assert_eq!(cookie.len(), MAX_PENDING_FLOWS);
        assert!(!cookie.contains(&all[0]));
        assert!(!cookie.contains(&all[1]));
        assert!(cookie.contains(&all[2]));
        assert!(cookie.contains(&all[4]));
        assert!(cookie.remove(&all[3]));
        assert!(!cookie.remove(&all[3]));
        assert!(!cookie.contains(&all[3]));
        assert_eq!(cookie.len(), 2);
    }

    #[test]
    fn bindings_are_random_and_redacted() {
        let a = FlowBinding::generate();
        let b = FlowBinding::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose_secret().len(), 22);
        assert_eq!(format!("{a:?}"), "FlowBinding([redacted])");
    }
}
