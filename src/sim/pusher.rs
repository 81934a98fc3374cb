//! The pusher: what WeChat does every ten minutes — POST an encrypted, signed
//! `component_verify_ticket` event to the platform's 授权事件接收URL (docs/wechat-protocol.md §2, §4.6,
//! §16) and expect the body `success` — and what it does when an official account authorizes,
//! updates or revokes the platform (`authorized`, `updateauthorized`, `unauthorized`, with the
//! `AuthorizationCode`), to the same URL, encrypted and signed the same way.
//!
//! The query carries all five parameters WeChat sends (`signature`, `timestamp`, `nonce`,
//! `encrypt_type=aes`, `msg_signature`); the body is the `<xml><AppId/><Encrypt/></xml>`
//! envelope. Encryption and signing use the crate's own message crypto, so a push that the
//! proxy accepts proves both sides agree on the scheme.

use std::{sync::Arc, time::Duration};

use url::Url;

use super::{SimError, state::Inner};
use crate::clock::unix_now;
use crate::wechat::{
    AuthorizerAppId, AuthorizerCode, PreAuthCode,
    crypto::MsgCrypt,
    events::{
        AuthorizationChange, AuthorizationGrant, authorization_event_xml, seal_push,
        ticket_event_xml,
    },
};

pub use super::state::PusherConfig;

/// Connect timeout of a push (WeChat gives the receiver 5 s in total).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Total timeout of a push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay after a failed push; doubles up to the push interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How much of a rejecting receiver's body is kept for the error.
const BODY_SNIPPET: usize = 200;

/// The one HTTP client used for pushes: bounded timeouts, no redirects.
pub(crate) fn client() -> Result<reqwest::Client, SimError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PUSH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(SimError::Client)
}

/// One push of the current ticket.
pub(crate) async fn push(inner: &Inner, events_url: &Url) -> Result<(), SimError> {
    let ticket = inner.state().current_ticket();
    let config = &inner.config;
    let event = ticket_event_xml(&config.component_appid, now(), &ticket);
    tracing::debug!(events_url = %events_url, component_appid = %config.component_appid, "sim: pushing component_verify_ticket");
    deliver(inner, events_url, &event).await
}

/// One authorization-change push for `appid`; `authorized` and `updateauthorized` carry a fresh
/// `AuthorizationCode` (single use, for `api_query_auth`).
pub(crate) async fn push_authorization(
    inner: &Inner,
    events_url: &Url,
    change: AuthorizationChange,
    appid: &AuthorizerAppId,
) -> Result<(), SimError> {
    let config = &inner.config;
    let created = now();
    let grant = if change == AuthorizationChange::Revoked {
        AuthorizationGrant::default()
    } else {
        let ttl = config.authorization_code_ttl;
        let code = inner.state().issue_auth_code(appid.as_str(), ttl);
        AuthorizationGrant {
            authorization_code: Some(AuthorizerCode::new(code)),
            code_expired_time: Some(
                created.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(0)),
            ),
            pre_auth_code: Some(PreAuthCode::new(format!(
                "preauthcode@@@{}",
                super::http::random_token(32)
            ))),
        }
    };
    let event = authorization_event_xml(&config.component_appid, created, change, appid, &grant);
    tracing::debug!(events_url = %events_url, %appid, info_type = change.info_type(), "sim: pushing an authorization change");
    deliver(inner, events_url, &event).await
}

/// Encrypts, signs and POSTs one event; the receiver must answer 200 `success`.
async fn deliver(inner: &Inner, events_url: &Url, event: &str) -> Result<(), SimError> {
    let timestamp = unix_now().to_string();
    let nonce = super::http::random_hex(10);
    let (query, body) = seal(inner, event, &timestamp, &nonce)?;
    let mut url = events_url.clone();
    url.set_query(Some(&query));
    let response = inner
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "text/xml")
        .body(body)
        .send()
        .await
        .map_err(|e| SimError::PushTransport(e.without_url()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| SimError::PushTransport(e.without_url()))?;
    if status == reqwest::StatusCode::OK && text == "success" {
        Ok(())
    } else {
        Err(SimError::PushRejected {
            status: status.as_u16(),
            body: text.chars().take(BODY_SNIPPET).collect(),
        })
    }
}

/// Pushes now and every `every`; failed pushes are retried sooner.
pub(crate) async fn run(inner: Arc<Inner>, events_url: Url, every: Duration) {
    let every = every.max(Duration::from_millis(10));
    let mut retry = FIRST_RETRY.min(every);
    loop {
        let wait = match push(&inner, &events_url).await {
            Ok(()) => {
                retry = FIRST_RETRY.min(every);
                every
            }
            Err(error) => {
                tracing::warn!(%error, events_url = %events_url, "sim: ticket push failed; retrying");
                let wait = retry;
                retry = (retry * 2).min(every);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Encrypts and signs an event: `(query, body)`.
fn seal(
    inner: &Inner,
    event: &str,
    timestamp: &str,
    nonce: &str,
) -> Result<(String, String), SimError> {
    let config = &inner.config;
    let crypt = MsgCrypt::new(
        &config.message_token,
        &config.encoding_aes_key,
        config.component_appid.clone(),
    )
    .map_err(SimError::Crypto)?;
    Ok(seal_push(&crypt, event, timestamp, nonce))
}

/// `CreateTime` of a push: now, Unix seconds.
fn now() -> i64 {
    crate::wechat::token::now_unix()
}
