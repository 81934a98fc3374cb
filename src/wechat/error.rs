//! Errors of every WeChat operation and their classification.
//!
//! WeChat answers almost every failure with HTTP 200 and an `errcode`; what the caller should do
//! depends on the code, not on the text (docs/wechat-protocol.md §12, §17.10). [`WeChatError::class`]
//! turns an error into one of a few [`ErrorClass`]es so that the token manager and the auth layer
//! decide on retries, token refreshes and error pages in one place.
//!
//! No variant ever carries a secret: transport errors are rendered without the request URL
//! (WeChat wants tokens and secrets in query strings), and `errmsg` is cut down to its
//! human-readable head plus the `rid` (WeChat echoes request data such as `requestIP` in it).

use std::fmt::Write as _;

use super::{
    AuthorizerAppId, crypto::CryptoError, events::PushError, persist::StoreError,
    tenants::TenantStatus,
};

/// Why a call to WeChat (or an operation around it) failed.
///
/// `Clone` so that the token manager can answer a remembered failure (quota, configuration)
/// during its cool-down without asking WeChat again.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WeChatError {
    /// WeChat answered with a non-zero `errcode`.
    #[error("WeChat {endpoint} answered errcode {code}: {errmsg}")]
    Api {
        /// The `errcode` (see [`ErrorClass`] for what each family means).
        code: i64,
        /// The sanitised `errmsg`: its leading text and the `rid`, nothing echoed from the
        /// request (no `requestIP`, no `hint`).
        errmsg: String,
        /// Which WeChat endpoint answered.
        endpoint: &'static str,
    },
    /// WeChat did not answer within the configured timeout.
    #[error("WeChat {endpoint} did not answer in time")]
    Timeout {
        /// Which WeChat endpoint was called.
        endpoint: &'static str,
    },
    /// The connection to WeChat failed (DNS, TCP, TLS, reset). The message never contains the
    /// request URL.
    #[error("could not talk to WeChat {endpoint}: {message}")]
    Transport {
        /// Which WeChat endpoint was called.
        endpoint: &'static str,
        /// What went wrong, without the URL.
        message: String,
    },
    /// WeChat answered something unusable: HTTP 5xx or another non-2xx status, a body that is
    /// not JSON, or JSON without the fields a success must carry. Treated as transient.
    #[error("unusable reply from WeChat {endpoint}: {reason}")]
    BadReply {
        /// Which WeChat endpoint answered.
        endpoint: &'static str,
        /// What was wrong with the reply (never the reply body itself).
        reason: String,
    },
    /// No `component_verify_ticket` has been pushed (or persisted) yet, so no component token
    /// can be fetched. Wait for the next push (every ten minutes).
    #[error("no component_verify_ticket received yet; the platform is not ready")]
    NoTicket,
    /// An event push was refused (bad signature, wrong appid, undecryptable or garbled body).
    /// Not from WeChat (or not for us): answer 4xx and store nothing.
    #[error("event push refused: {0}")]
    Push(#[from] PushError),
    /// The push crypto cannot be set up (the EncodingAESKey is not 43 base64 characters).
    #[error("push crypto unusable: {0}")]
    Crypto(#[from] CryptoError),
    /// The platform store (ticket and token persistence) failed.
    #[error("platform store failed: {0}")]
    Store(#[from] StoreError),
    /// The official account is not a tenant that may log users in right now (unknown, revoked,
    /// or without the web permission set): no authorize URL is built and no code is exchanged
    /// for it. The auth layer shows its own page for this (by `status`); its class is
    /// [`ErrorClass::Configuration`].
    #[error("official account {appid} cannot log users in: tenant status {status}")]
    Tenant {
        /// The official account asked for.
        appid: AuthorizerAppId,
        /// Its status in the tenant registry.
        status: TenantStatus,
    },
    /// The settings cannot work (bad EncodingAESKey, HTTP client cannot be built, an operation
    /// that does not exist in the configured mode).
    #[error("WeChat settings are unusable: {reason}")]
    Misconfigured {
        /// What is wrong (never a secret value).
        reason: String,
    },
}

/// What a caller should do about a [`WeChatError`] (docs/wechat-protocol.md §12 and §17.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Transient (`-1`, `45011`, HTTP 5xx, garbled replies, timeouts, connection failures):
    /// retry later, with backoff and a bound.
    Retry,
    /// The access token used was invalid, expired or superseded (`40001`, `40014`, `42001`):
    /// compare-and-invalidate it, fetch a new one once, retry once.
    RefreshToken,
    /// The user has to go through the authorize page again (used/expired/invalid code,
    /// refresh token gone, insufficient scope, snapshot user).
    Reauthorize,
    /// Our setup is wrong (IP whitelist, appid, secret, permissions); retrying cannot help,
    /// an operator must act. Unknown `errcode`s land here too.
    Configuration,
    /// The `component_verify_ticket` is missing, expired or invalid (`61005`, `61006`): wait for
    /// the next push.
    Ticket,
    /// The daily API quota is exhausted (`45009`): do not retry today (or clear the quota).
    Quota,
}

impl WeChatError {
    /// Classifies this error so the caller knows whether to retry, refresh a token, send the
    /// user back to WeChat or alert an operator.
    pub fn class(&self) -> ErrorClass {
        match self {
            WeChatError::Api { code, .. } => class_of_code(*code),
            WeChatError::Timeout { .. }
            | WeChatError::Transport { .. }
            | WeChatError::BadReply { .. }
            | WeChatError::Store(_) => ErrorClass::Retry,
            WeChatError::NoTicket => ErrorClass::Ticket,
            WeChatError::Push(_)
            | WeChatError::Crypto(_)
            | WeChatError::Tenant { .. }
            | WeChatError::Misconfigured { .. } => ErrorClass::Configuration,
        }
    }

    /// The WeChat `errcode`, when WeChat answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            WeChatError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The class of a WeChat `errcode` (docs/wechat-protocol.md §12).
///
/// Unknown codes are [`ErrorClass::Configuration`]: retrying something we do not understand
/// risks burning the daily quota, so an operator should look.
pub fn class_of_code(code: i64) -> ErrorClass {
    match code {
        -1 | 45011 => ErrorClass::Retry,
        40001 | 40014 | 42001 => ErrorClass::RefreshToken,
        40029 | 40163 | 42003 | 41008 | 40030 | 42002 | 42007 | 48001 | 50001 | 40003 => {
            ErrorClass::Reauthorize
        }
        61005 | 61006 => ErrorClass::Ticket,
        45009 => ErrorClass::Quota,
        // 61004, 40013, 40125, 41004, 61011, 61003, 61007, 40164, 40002, 89503, 61023, 47001 …
        _ => ErrorClass::Configuration,
    }
}

/// Longest sanitised `errmsg` head we keep (characters).
const ERRMSG_MAX_CHARS: usize = 120;

/// Cuts a WeChat `errmsg` down to what is safe to log: the text before any echoed request data
/// (`requestIP`, `hint`) or the `rid`, printable characters only and bounded in length, plus the
/// `rid` (which WeChat support asks for) when there is one.
pub(crate) fn sanitize_errmsg(raw: &str) -> String {
    const CUTS: [&str; 3] = ["requestIP", "hint", "rid"];
    let head_end = CUTS
        .iter()
        .filter_map(|marker| raw.find(marker))
        .min()
        .unwrap_or(raw.len());
    let head: String = raw[..head_end]
        .chars()
        .filter(|c| !c.is_control())
        .take(ERRMSG_MAX_CHARS)
        .collect();
    let mut out = head
        .trim()
        .trim_end_matches([',', ';', ':', '.', '(', '['])
        .trim()
        .to_owned();
    if let Some(rid) = extract_rid(raw) {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "(rid: {rid})");
    }
    out
}

/// The `rid` of an errmsg (`rid: 6638c156-2d826832-17af344b`): hex digits and dashes only.
fn extract_rid(raw: &str) -> Option<&str> {
    let after = &raw[raw.find("rid:")? + "rid:".len()..];
    let after = after.trim_start();
    let end = after
        .find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .unwrap_or(after.len())
        .min(64);
    let rid = &after[..end];
    (!rid.is_empty()).then_some(rid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> WeChatError {
        WeChatError::Api {
            code,
            errmsg: String::new(),
            endpoint: "test",
        }
    }

    #[test]
    fn every_listed_code_has_its_class() {
        let table: &[(i64, ErrorClass)] = &[
            (-1, ErrorClass::Retry),
            (45011, ErrorClass::Retry),
            (40001, ErrorClass::RefreshToken),
            (40014, ErrorClass::RefreshToken),
            (42001, ErrorClass::RefreshToken),
            (40029, ErrorClass::Reauthorize),
            (40163, ErrorClass::Reauthorize),
            (42003, ErrorClass::Reauthorize),
            (41008, ErrorClass::Reauthorize),
            (40030, ErrorClass::Reauthorize),
            (42002, ErrorClass::Reauthorize),
            (42007, ErrorClass::Reauthorize),
            (48001, ErrorClass::Reauthorize),
            (50001, ErrorClass::Reauthorize),
            (61004, ErrorClass::Configuration),
            (40013, ErrorClass::Configuration),
            (40125, ErrorClass::Configuration),
            (41004, ErrorClass::Configuration),
            (61011, ErrorClass::Configuration),
            (61003, ErrorClass::Configuration),
            (61007, ErrorClass::Configuration),
            (40164, ErrorClass::Configuration),
            (40002, ErrorClass::Configuration),
            (89503, ErrorClass::Configuration),
            (61005, ErrorClass::Ticket),
            (61006, ErrorClass::Ticket),
            (45009, ErrorClass::Quota),
            (99999, ErrorClass::Configuration),
        ];
        for &(code, class) in table {
            assert_eq!(api(code).class(), class, "errcode {code}");
            assert_eq!(api(code).code(), Some(code));
        }
    }

    #[test]
    fn non_api_errors_have_their_class() {
        assert_eq!(
            WeChatError::Timeout { endpoint: "x" }.class(),
            ErrorClass::Retry
        );
        assert_eq!(
            WeChatError::Transport {
                endpoint: "x",
                message: "reset".into()
            }
            .class(),
            ErrorClass::Retry
        );
        assert_eq!(
            WeChatError::BadReply {
                endpoint: "x",
                reason: "HTTP 502".into()
            }
            .class(),
            ErrorClass::Retry
        );
        assert_eq!(WeChatError::NoTicket.class(), ErrorClass::Ticket);
        assert_eq!(
            WeChatError::Misconfigured { reason: "x".into() }.class(),
            ErrorClass::Configuration
        );
        assert_eq!(
            WeChatError::from(CryptoError::InvalidKey).class(),
            ErrorClass::Configuration
        );
        assert_eq!(
            WeChatError::from(PushError::Crypto(CryptoError::InvalidSignature)).class(),
            ErrorClass::Configuration
        );
        assert_eq!(WeChatError::NoTicket.code(), None);
    }

    #[test]
    fn errmsg_keeps_text_and_rid_only() {
        assert_eq!(
            sanitize_errmsg("component ticket is invalid rid: 6638c156-2d826832-17af344b"),
            "component ticket is invalid (rid: 6638c156-2d826832-17af344b)"
        );
        assert_eq!(
            sanitize_errmsg(
                "access clientip is not registered requestIP: 203.0.113.7 rid: 65a0b1c2-0aa1b2c3-11223344"
            ),
            "access clientip is not registered (rid: 65a0b1c2-0aa1b2c3-11223344)"
        );
        assert_eq!(
            sanitize_errmsg("invalid code, hint: [abcDEF123secret]"),
            "invalid code"
        );
        assert_eq!(sanitize_errmsg("system error"), "system error");
        assert_eq!(sanitize_errmsg(""), "");
        let long = "x".repeat(1000);
        assert_eq!(sanitize_errmsg(&long).len(), ERRMSG_MAX_CHARS);
        assert_eq!(sanitize_errmsg("a\u{1b}[31mb\nc"), "a[31mbc");
    }
}
