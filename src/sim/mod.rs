//! The simulated WeChat (loopback only), its ticket pusher and the demo upstream.
//!
//! Real WeChat cannot be reached from a developer laptop or CI: the authorize page only works
//! inside the WeChat app, the redirect host must be a registered domain and the component APIs
//! check an IP whitelist. This module is a faithful stand-in that speaks the same wire protocol
//! (`open.weixin.qq.com` authorize page, `api.weixin.qq.com` JSON APIs, encrypted ticket pushes),
//! so that the dev mode works in a browser within a minute and every integration test runs
//! against real sockets.
//!
//! - [`wechat`]: [`SimWeChat`], the HTTP server with the authorize page (WeChat's browser only,
//!   like WeChat; `/_sim/phone` lets a desktop tab act as the phone in the demo), the website
//!   apps' QR login page (`connect/qrconnect`), the component token, code exchange, refresh and
//!   `sns/userinfo` endpoints, failure injection and call counters (also over HTTP under
//!   `/_sim/admin/`, for scripts such as `bench/soak.sh`).
//! - [`pusher`]: encrypted, signed `component_verify_ticket` and authorization-change
//!   (`authorized`, `updateauthorized`, `unauthorized`) pushes to the proxy's events URL.
//! - [`upstream`]: [`DemoUpstream`](upstream::DemoUpstream), a page that shows what the proxy
//!   forwarded (identity headers, decoded JWT claims) and a JSON echo for tests.
//!
//! Everything here binds loopback addresses only and is marked as a simulation wherever a human
//! can see it. Production modules never import this module.

pub mod pusher;
pub mod upstream;
pub mod wechat;

mod admin;
mod api;
mod authorize;
mod grants;
mod http;
mod phone;
mod qrconnect;
mod state;

pub use state::{
    AuthMode, DEFAULT_FUNC_IDS, Endpoint, Failure, PusherConfig, SimAuthorizer, SimConfig, SimUser,
    SimWebsiteApp,
};
pub use wechat::SimWeChat;

/// User number `i` of a synthetic population with realistic field sizes (28-character openid
/// and unionid, a CJK + emoji nickname, a 130-byte avatar URL): what benchmarks and
/// `dev.prefill_sessions` fill the session store with.
pub fn synthetic_identity(i: usize) -> crate::Identity {
    crate::Identity {
        openid: format!("o6_bmjrPTlm6_2sgVt7h{i:08}").into(),
        unionid: Some(format!("oUnion_2sgVt7hMZOPfL{i:08}").into()),
        nickname: "小明🙂".to_owned(),
        avatar: format!(
            "https://thirdwx.qlogo.cn/mmopen/vi_32/Q0j4TwGTfTLkGl5cW3icVmyiaVd3eZdkAFOh9z5qJTxTrw7iaUcXGj4YbIBuRSiaiaq{i:08}/132"
        ),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: crate::ids::Scope::UserInfo,
    }
}

use std::net::SocketAddr;

/// What can go wrong when starting the simulator or the demo upstream, or when pushing a ticket.
///
/// Messages never contain secrets (tickets, tokens, keys): the push query and body are not
/// part of any variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The simulator refuses to listen anywhere but on a loopback address, so that a dev build
    /// can never expose a fake WeChat (which hands out identities for free) to a network.
    #[error("the simulator only binds loopback addresses, refusing {0}")]
    NotLoopback(SocketAddr),
    /// Binding or reading the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Building the HTTP client used by the pusher failed.
    #[error("cannot build the push HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Encrypting the push failed (bad EncodingAESKey in the sim's configuration).
    #[error("cannot encrypt the ticket push: {0}")]
    Crypto(#[source] crate::wechat::crypto::CryptoError),
    /// The push could not be delivered (connection refused, timeout).
    #[error("ticket push not delivered: {0}")]
    PushTransport(#[source] reqwest::Error),
    /// An authorization change should be pushed but no events URL is known (neither
    /// [`SimConfig::pusher`] nor [`SimWeChat::set_events_url`]); the change itself was made.
    #[error("no events URL to push the authorization change to")]
    NoEventsUrl,
    /// The admin call names an official account the simulator does not know.
    #[error("unknown official account {0}")]
    UnknownAccount(String),
    /// The receiver answered something other than HTTP 200 with the body `success`.
    #[error("ticket push rejected: HTTP {status}, body {body:?}")]
    PushRejected {
        /// HTTP status code of the receiver's answer.
        status: u16,
        /// The first bytes of the receiver's answer (for diagnosis).
        body: String,
    },
}
