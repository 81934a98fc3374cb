//! Pending login flows, kept in the browser that started them.
//!
//! A login start writes nothing on the server: the pending flow — the browser binding of its
//! OAuth `state`, the return path and the start time — goes into the browser's encrypted flow
//! cookie ([`FlowCookie`], at most [`MAX_PENDING_FLOWS`] flows). At the callback the layer finds
//! the flow in the cookie by the state's binding, checks its age, and only then asks the store
//! to mark the state as redeemed ([`crate::session::SessionStore::consume_flow`], atomic and
//! single use). So no number of anonymous login starts can push a real user's pending login out
//! of a shared table, and a state from another browser never burns anyone's login.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::return_path::{MAX_RETURN_PATH_LEN, ReturnPath};
use crate::ids::AppId;
use crate::secret_type;

secret_type!(
    /// The key of a login flow: the OAuth `state` string as the layer generated it. Stores keep
    /// only its SHA-256 (the consumed-state marker).
    ///
    /// Defined here (not `wechat::OAuthState`) because `session/` knows nothing about WeChat;
    /// the layer converts.
    FlowKey
);

secret_type!(
    /// An opaque value binding a login flow to the browser that started it, derived from the
    /// flow's OAuth state ([`FlowBinding::for_state`]).
    ///
    /// Kept in the encrypted flow cookie, which the browser can neither read nor forge.
    FlowBinding
);

impl FlowBinding {
    /// The browser binding of the login flow `state`: the first 128 bits of SHA-256(state),
    /// base64url.
    ///
    /// Derived from the state (rather than random) so that the callback can check that *this*
    /// browser was issued the state — its flow cookie, which it cannot forge (authenticated
    /// encryption), holds the binding — before consuming anything: a state from another
    /// browser, a tampered one or a replay then never burns someone's pending login.
    pub fn for_state(state: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(state.as_bytes());
        Self::new(URL_SAFE_NO_PAD.encode(&digest[..16]))
    }

    /// A fresh random binding (128 bits from the OS CSPRNG, base64url).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::new(URL_SAFE_NO_PAD.encode(bytes))
    }
}

secret_type!(
    /// The id of a desktop QR login ticket as the phone's flow cookie carries it (the QR link's
    /// last path segment). A bearer secret until the ticket is redeemed: never logged.
    QrTicketId
);

/// How far in the future a flow's start time may lie (clock skew between instances), in
/// seconds.
pub const FLOW_CLOCK_SKEW_SECS: u64 = 5;

/// A login in progress, as the browser's flow cookie carries it (short field names: it travels
/// in every request to our origin while the login is pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    /// The browser binding of the flow's OAuth state.
    #[serde(rename = "b")]
    pub binding: FlowBinding,
    /// Where to send the browser once the login completes (validated again when decoded).
    #[serde(rename = "r")]
    pub return_path: ReturnPath,
    /// When the flow started (unix seconds).
    #[serde(rename = "t")]
    pub created_at: u64,
    /// The official account (tenant) the login is for: the callback must come back for it and
    /// the code is exchanged for it. `None` in a cookie written before tenants existed (valid
    /// only in the single-tenant set-up).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<AppId>,
    /// The desktop QR login this flow runs on the phone for (the ticket id of the QR link it was
    /// started from), `None` for an ordinary login. The callback of a bound flow stores the
    /// identity in that ticket instead of opening a session (see `layer::qr`).
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<QrTicketId>,
    /// A desktop login through WeChat's website login (`qr.desktop` website mode): the
    /// callback exchanges the code with the website app, not the official account.
    #[serde(rename = "w", default, skip_serializing_if = "std::ops::Not::not")]
    pub website: bool,
}

impl LoginFlow {
    /// Whether the flow is still redeemable at `now` (unix seconds): not older than `ttl` and
    /// not started more than [`FLOW_CLOCK_SKEW_SECS`] in the future.
    pub fn is_live(&self, now: u64, ttl: std::time::Duration) -> bool {
        self.created_at <= now.saturating_add(FLOW_CLOCK_SKEW_SECS)
            && now <= self.created_at.saturating_add(ttl.as_secs())
    }
}

/// Maximum number of pending flows a browser keeps; older ones are dropped so that abandoned
/// logins (several tabs, back button) cannot make the cookie grow without bound.
pub const MAX_PENDING_FLOWS: usize = 3;

/// Most bytes of return paths the flow cookie carries in total. The newest flow is always kept
/// (its return path may have the maximum length, 2048 bytes); older flows are dropped while the
/// total is above this. So the largest cookie holds one maximal return path: about 2.9 KB of
/// `name=value`, well under the 4096 bytes browsers accept.
pub const MAX_PENDING_RETURN_BYTES: usize = MAX_RETURN_PATH_LEN * 3 / 4;

/// The payload of the flow cookie: this browser's pending logins, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCookie {
    // A payload of an older version (`{"b":[…]}`) reads as empty: those logins restart.
    #[serde(rename = "f", default)]
    flows: Vec<LoginFlow>,
}

impl FlowCookie {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a flow, then drops the oldest ones beyond [`MAX_PENDING_FLOWS`] or
    /// [`MAX_PENDING_RETURN_BYTES`] (the newest is always kept).
    pub fn push(&mut self, flow: LoginFlow) {
        self.flows.push(flow);
        self.enforce_cap();
    }

    /// The pending flow whose binding is `binding`, if any. Every entry is compared (in
    /// constant time each, no early exit), so timing does not reveal the position.
    pub fn find(&self, binding: &FlowBinding) -> Option<&LoginFlow> {
        self.flows.iter().fold(None, |found, f| {
            if f.binding == *binding {
                Some(f)
            } else {
                found
            }
        })
    }

    /// Whether `binding` is one of this browser's pending flows.
    pub fn contains(&self, binding: &FlowBinding) -> bool {
        self.find(binding).is_some()
    }

    /// Removes the flow with `binding` (redeemed, or expired); `true` when it was present.
    pub fn remove(&mut self, binding: &FlowBinding) -> bool {
        let before = self.flows.len();
        self.flows.retain(|f| f.binding != *binding);
        before != self.flows.len()
    }

    /// Drops the flows that are no longer live at `now` (see [`LoginFlow::is_live`]).
    pub fn remove_expired(&mut self, now: u64, ttl: std::time::Duration) {
        self.flows.retain(|f| f.is_live(now, ttl));
    }

    /// The pending flows, oldest first.
    pub fn flows(&self) -> &[LoginFlow] {
        &self.flows
    }

    /// Whether no flow is pending (the cookie can then be removed).
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Number of pending flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Drops the oldest entries beyond the caps (also used after decoding a cookie, which an
    /// older version or another configuration may have written).
    pub(crate) fn enforce_cap(&mut self) {
        let excess = self.flows.len().saturating_sub(MAX_PENDING_FLOWS);
        self.flows.drain(..excess);
        while self.flows.len() > 1 && self.return_bytes() > MAX_PENDING_RETURN_BYTES {
            self.flows.remove(0);
        }
    }

    fn return_bytes(&self) -> usize {
        self.flows
            .iter()
            .map(|f| f.return_path.as_str().len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn flow(path: &str, created_at: u64) -> LoginFlow {
        LoginFlow {
            binding: FlowBinding::generate(),
            return_path: ReturnPath::parse(path).unwrap(),
            created_at,
            appid: None,
            qr: None,
            website: false,
        }
    }

    #[test]
    fn flow_cookie_keeps_the_three_most_recent() {
        let all: Vec<LoginFlow> = (0..5).map(|i| flow(&format!("/p{i}"), 100)).collect();
        let mut cookie = FlowCookie::new();
        for f in &all {
            cookie.push(f.clone());
        }
        assert_eq!(cookie.len(), MAX_PENDING_FLOWS);
        assert!(!cookie.contains(&all[0].binding));
        assert!(!cookie.contains(&all[1].binding));
        assert_eq!(cookie.find(&all[2].binding), Some(&all[2]));
        assert!(cookie.contains(&all[4].binding));
        assert!(cookie.remove(&all[3].binding));
        assert!(!cookie.remove(&all[3].binding));
        assert!(!cookie.contains(&all[3].binding));
        assert_eq!(cookie.len(), 2);
    }

    #[test]
    fn long_return_paths_push_older_flows_out() {
        let long = format!("/{}", "a".repeat(MAX_RETURN_PATH_LEN - 1));
        let mut cookie = FlowCookie::new();
        cookie.push(flow("/short", 1));
        cookie.push(flow(&long, 2));
        assert_eq!(cookie.len(), 1, "one maximal path fills the budget");
        assert_eq!(cookie.flows()[0].created_at, 2);
        cookie.push(flow("/next", 3));
        assert_eq!(cookie.len(), 1, "the newest is always kept");
        assert_eq!(cookie.flows()[0].return_path.as_str(), "/next");
        cookie.push(flow("/again", 4));
        assert_eq!(cookie.len(), 2);
    }

    #[test]
    fn liveness_follows_the_ttl_and_refuses_the_future() {
        let ttl = Duration::from_secs(600);
        let f = flow("/", 1_000);
        assert!(f.is_live(1_000, ttl));
        assert!(f.is_live(1_600, ttl));
        assert!(!f.is_live(1_601, ttl));
        assert!(f.is_live(1_000 - FLOW_CLOCK_SKEW_SECS, ttl));
        assert!(!f.is_live(1_000 - FLOW_CLOCK_SKEW_SECS - 1, ttl));
        let mut cookie = FlowCookie::new();
        cookie.push(f);
        cookie.push(flow("/b", 1_500));
        cookie.remove_expired(1_700, ttl);
        assert_eq!(cookie.len(), 1);
        assert_eq!(cookie.flows()[0].return_path.as_str(), "/b");
    }

    #[test]
    fn binding_for_state_is_a_128_bit_digest_of_the_state() {
        let a = FlowBinding::for_state("AbCdEfGhIjKlMnOpQrStUvWxYz012345");
        assert_eq!(
            a,
            FlowBinding::for_state("AbCdEfGhIjKlMnOpQrStUvWxYz012345")
        );
        assert_ne!(
            a,
            FlowBinding::for_state("AbCdEfGhIjKlMnOpQrStUvWxYz012346")
        );
        assert_eq!(a.expose_secret().len(), 22);
        assert!(!a.expose_secret().contains("AbCd"));
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
