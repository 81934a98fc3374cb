//! Metrics: what the crate records, under which names and with which labels.
//!
//! The crate records through the [`metrics`] facade and never installs a recorder itself: without
//! one (a library user who did not install any) every call here is a no-op. The sidecar installs
//! the Prometheus exporter on its own listener (`[metrics] listen`, see `app`); a Rust service
//! that embeds the layer gets the same series in whatever recorder it installed.
//!
//! Every label value is a `&'static str` from a closed set defined here or by the error rows the
//! crate already has ([`AuthError::code`], [`ErrorClass`], the push errors), so cardinality is
//! bounded by type: never an openid, unionid, path, IP, host or raw `errcode`. The one exception
//! is the opt-in `tenant` label (an authorizer appid), set only when [`set_tenant_label`] was
//! switched on, which the sidecar allows only for at most [`TENANT_LABEL_MAX_TENANTS`]
//! configured tenants.
//!
//! Recording costs a few atomic operations: the macros get static names and labels (no string is
//! formatted or allocated per request, except the opt-in tenant label).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `wxauth_build_info` | gauge (1) | `version` |
//! | `wxauth_logins_started_total` | counter | (`tenant`) |
//! | `wxauth_login_callbacks_total` | counter | `result` (`ok` or an [`AuthError::code`]), (`tenant`) |
//! | `wxauth_login_duration_seconds` | histogram | (`tenant`) — login start to session |
//! | `wxauth_wechat_api_requests_total` | counter | `endpoint` ([`WeChatEndpoint`]), `class` (`ok` or an [`ErrorClass`]) |
//! | `wxauth_wechat_api_duration_seconds` | histogram | `endpoint` |
//! | `wxauth_component_token_refreshes_total` | counter | `result` (`ok`, `error`) |
//! | `wxauth_component_token_expiry_timestamp_seconds` | gauge | — |
//! | `wxauth_pushes_total` | counter | `kind` ([`push_kind`]), `result` (`accepted` or a [`push_reason`]) |
//! | `wxauth_ticket_last_accepted_timestamp_seconds` | gauge | — |
//! | `wxauth_tenants` | gauge | `status` ([`TenantStatus::as_str`]) |
//! | `wxauth_sessions_created_total` | counter | (`tenant`) |
//! | `wxauth_sessions_ended_total` | counter | `reason` ([`SessionEnd`]) |
//! | `wxauth_sessions_active` | gauge | — (stores that know their size) |
//! | `wxauth_requests_total` | counter | `outcome` ([`Outcome`]), `status_class` (`1xx`…`5xx`, `none`) |
//! | `wxauth_request_duration_seconds` | histogram | `outcome` — to the response headers |
//! | `wxauth_forward_auth_total` | counter | `result` ([`ForwardAuthResult`]) |
//! | `wxauth_qr_tickets_total` | counter | `event` (see [`QR_TICKETS`]) |
//!
//! `README.md` and `README.zh-CN.md` list exactly these names (a test below reads both).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ::metrics::{Label, counter, gauge, histogram};
use http::StatusCode;

use crate::layer::AuthError;
use crate::wechat::{
    client::endpoint,
    error::{ErrorClass, WeChatError},
    events::{EventError, PushError, PushEvent},
    tenants::TenantStatus,
};

/// The metric names (all prefixed `wxauth_`, base units, counters ending in `_total`).
pub mod names {
    /// Gauge 1 with the crate version as a label.
    pub const BUILD_INFO: &str = "wxauth_build_info";
    /// Logins sent to WeChat's authorize page.
    pub const LOGINS_STARTED: &str = "wxauth_logins_started_total";
    /// Callbacks by result.
    pub const LOGIN_CALLBACKS: &str = "wxauth_login_callbacks_total";
    /// Seconds from login start to session.
    pub const LOGIN_DURATION: &str = "wxauth_login_duration_seconds";
    /// WeChat API calls by endpoint and error class.
    pub const WECHAT_REQUESTS: &str = "wxauth_wechat_api_requests_total";
    /// WeChat API latency by endpoint.
    pub const WECHAT_DURATION: &str = "wxauth_wechat_api_duration_seconds";
    /// `component_access_token` fetches by result.
    pub const TOKEN_REFRESHES: &str = "wxauth_component_token_refreshes_total";
    /// When the current `component_access_token` expires (Unix seconds).
    pub const TOKEN_EXPIRY: &str = "wxauth_component_token_expiry_timestamp_seconds";
    /// Pushes to the events endpoint by kind and result.
    pub const PUSHES: &str = "wxauth_pushes_total";
    /// When the last `component_verify_ticket` push was accepted (Unix seconds).
    pub const TICKET_LAST_ACCEPTED: &str = "wxauth_ticket_last_accepted_timestamp_seconds";
    /// Tenants (official accounts) by status.
    pub const TENANTS: &str = "wxauth_tenants";
    /// Sessions created (logins completed).
    pub const SESSIONS_CREATED: &str = "wxauth_sessions_created_total";
    /// Sessions ended, by reason.
    pub const SESSIONS_ENDED: &str = "wxauth_sessions_ended_total";
    /// Live sessions (stores that know their size).
    pub const SESSIONS_ACTIVE: &str = "wxauth_sessions_active";
    /// Requests through the layer by outcome and status class.
    pub const REQUESTS: &str = "wxauth_requests_total";
    /// Seconds from request to response headers, by outcome.
    pub const REQUEST_DURATION: &str = "wxauth_request_duration_seconds";
    /// Forward-auth answers by result.
    pub const FORWARD_AUTH: &str = "wxauth_forward_auth_total";
}

/// Histogram buckets (seconds) of [`names::REQUEST_DURATION`]: a session hit is well under a
/// millisecond, a slow upstream up to a minute.
pub const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Histogram buckets (seconds) of [`names::WECHAT_DURATION`] (WeChat requests time out at 5 s).
pub const WECHAT_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0];
/// Histogram buckets (seconds) of [`names::LOGIN_DURATION`] (a person reads a consent page).
pub const LOGIN_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The most configured tenants for which the `tenant` label may be switched on: beyond it the
/// sidecar refuses `metrics.tenant_label = true` (as it does in dynamic mode, where the number
/// of tenants is not bounded by the configuration).
pub const TENANT_LABEL_MAX_TENANTS: usize = 100;

static TENANT_LABEL: AtomicBool = AtomicBool::new(false);

/// Switches the `tenant` label of the login and session series on or off (default off). Only
/// switch it on when the number of tenants is bounded (see [`TENANT_LABEL_MAX_TENANTS`]).
pub fn set_tenant_label(on: bool) {
    TENANT_LABEL.store(on, Ordering::Relaxed);
}

/// The `tenant` label for `appid`, when switched on.
fn tenant_labels(appid: Option<&str>) -> Vec<Label> {
    match appid {
        Some(appid) if TENANT_LABEL.load(Ordering::Relaxed) => {
            vec![Label::new("tenant", appid.to_owned())]
        }
        _ => Vec::new(),
    }
}

/// What happened to a request that went through the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A session was found and the inner service (upstream) called.
    Forwarded,
    /// A browser without a session was sent into the login.
    LoginRedirect,
    /// An API client without a session got 401.
    Unauthenticated,
    /// A skip rule sent it to the inner service without a session.
    Skipped,
    /// A reserved route (`/_wxauth/…`) answered it.
    Reserved,
    /// Refused or failed before any of the above (bad path, unknown tenant, store failure…).
    Error,
}

impl Outcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::LoginRedirect => "login_redirect",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Skipped => "skipped",
            Outcome::Reserved => "reserved",
            Outcome::Error => "error",
        }
    }
}

/// Times one request through the layer; [`finish`](Self::finish) records it.
#[derive(Debug)]
pub(crate) struct RequestTimer {
    started: Instant,
    /// Set by the pipeline where the outcome is decided; [`Outcome::Error`] otherwise.
    pub(crate) outcome: Outcome,
}

impl RequestTimer {
    /// Starts timing a request.
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            outcome: Outcome::Error,
        }
    }

    /// Records the request with the response's status (`None`: the inner service failed).
    ///
    /// The same series as `counter!(names::REQUESTS, "outcome" => …, "status_class" => …)` and
    /// `histogram!(names::REQUEST_DURATION, "outcome" => …)`, with the keys built at compile
    /// time (every label value is from a closed set): no key is built, hashed or allocated per
    /// request. The recorder in force is asked on every call, as the macros do, so a recorder
    /// installed after the first request (global or local) gets every request that follows.
    pub(crate) fn finish(self, status: Option<StatusCode>) {
        let outcome = request_keys::index(self.outcome);
        let counter = &request_keys::COUNTERS[outcome][status_class_index(status)];
        let histogram = &request_keys::HISTOGRAMS[outcome];
        ::metrics::with_recorder(|recorder| {
            recorder
                .register_counter(counter, &request_keys::METADATA)
                .increment(1);
            recorder
                .register_histogram(histogram, &request_keys::METADATA)
                .record(self.started.elapsed().as_secs_f64());
        });
    }
}

/// The label values of `status_class`, indexed by [`status_class_index`].
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The index in [`STATUS_CLASSES`] of the `2xx`-style class of a status.
fn status_class_index(status: Option<StatusCode>) -> usize {
    match status.map(|s| s.as_u16() / 100) {
        Some(class @ 1..=5) => usize::from(class - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// `2xx`-style class of a status.
#[cfg(test)]
fn status_class(status: Option<StatusCode>) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// The keys of the per-request series, one per label combination, built at compile time (as the
/// `metrics` macros build a key whose labels are literals).
mod request_keys {
    use ::metrics::{Key, Label, Level, Metadata};

    use super::{Outcome, STATUS_CLASSES, names};

    /// The row of `outcome` in the tables below (a new [`Outcome`] does not compile until it
    /// has one, and its keys).
    pub(super) const fn index(outcome: Outcome) -> usize {
        match outcome {
            Outcome::Forwarded => 0,
            Outcome::LoginRedirect => 1,
            Outcome::Unauthenticated => 2,
            Outcome::Skipped => 3,
            Outcome::Reserved => 4,
            Outcome::Error => 5,
        }
    }

    /// Every [`Outcome`], by [`index`].
    pub(super) const OUTCOMES: [Outcome; 6] = [
        Outcome::Forwarded,
        Outcome::LoginRedirect,
        Outcome::Unauthenticated,
        Outcome::Skipped,
        Outcome::Reserved,
        Outcome::Error,
    ];

    /// What the macros give: this module as target and path, level `INFO`.
    pub(super) static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    const fn counter_labels(outcome: usize, class: usize) -> [Label; 2] {
        [
            Label::from_static_parts("outcome", OUTCOMES[outcome].as_str()),
            Label::from_static_parts("status_class", STATUS_CLASSES[class]),
        ]
    }

    const fn counter_label_row(outcome: usize) -> [[Label; 2]; 6] {
        [
            counter_labels(outcome, 0),
            counter_labels(outcome, 1),
            counter_labels(outcome, 2),
            counter_labels(outcome, 3),
            counter_labels(outcome, 4),
            counter_labels(outcome, 5),
        ]
    }

    static COUNTER_LABELS: [[[Label; 2]; 6]; 6] = [
        counter_label_row(0),
        counter_label_row(1),
        counter_label_row(2),
        counter_label_row(3),
        counter_label_row(4),
        counter_label_row(5),
    ];

    const fn counter_row(outcome: usize) -> [Key; 6] {
        let labels = &COUNTER_LABELS[outcome];
        [
            Key::from_static_parts(names::REQUESTS, &labels[0]),
            Key::from_static_parts(names::REQUESTS, &labels[1]),
            Key::from_static_parts(names::REQUESTS, &labels[2]),
            Key::from_static_parts(names::REQUESTS, &labels[3]),
            Key::from_static_parts(names::REQUESTS, &labels[4]),
            Key::from_static_parts(names::REQUESTS, &labels[5]),
        ]
    }

    /// `wxauth_requests_total{outcome, status_class}`, indexed by outcome, then status class.
    pub(super) static COUNTERS: [[Key; 6]; 6] = [
        counter_row(0),
        counter_row(1),
        counter_row(2),
        counter_row(3),
        counter_row(4),
        counter_row(5),
    ];

    static HISTOGRAM_LABELS: [[Label; 1]; 6] = [
        [Label::from_static_parts("outcome", OUTCOMES[0].as_str())],
        [Label::from_static_parts("outcome", OUTCOMES[1].as_str())],
        [Label::from_static_parts("outcome", OUTCOMES[2].as_str())],
        [Label::from_static_parts("outcome", OUTCOMES[3].as_str())],
        [Label::from_static_parts("outcome", OUTCOMES[4].as_str())],
        [Label::from_static_parts("outcome", OUTCOMES[5].as_str())],
    ];

    /// `wxauth_request_duration_seconds{outcome}`, indexed by outcome.
    pub(super) static HISTOGRAMS: [Key; 6] = [
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[0]),
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[1]),
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[2]),
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[3]),
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[4]),
        Key::from_static_parts(names::REQUEST_DURATION, &HISTOGRAM_LABELS[5]),
    ];
}

/// A login was sent to WeChat's authorize page.
pub(crate) fn login_started(tenant: &str) {
    counter!(names::LOGINS_STARTED, tenant_labels(Some(tenant))).increment(1);
}

/// A callback ended: `ok`, or the code of the error it was answered with.
pub(crate) fn login_callback<T>(result: &Result<T, AuthError>, tenant: Option<&str>) {
    let value = match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    let mut labels = tenant_labels(tenant);
    labels.push(Label::from_static_parts("result", value));
    counter!(names::LOGIN_CALLBACKS, labels).increment(1);
}

/// A login completed with a new session; `created_at` is the flow's start (Unix seconds).
pub(crate) fn login_completed(created_at: u64, tenant: &str) {
    let labels = tenant_labels(Some(tenant));
    #[allow(
        clippy::cast_precision_loss,
        reason = "Unix seconds fit an f64 exactly"
    )]
    let seconds = (unix_now_f64() - created_at as f64).max(0.0);
    histogram!(names::LOGIN_DURATION, labels.clone()).record(seconds);
    counter!(names::SESSIONS_CREATED, labels).increment(1);
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The user logged out.
    Logout,
    /// Its lifetime or idle timeout passed (stores that can tell).
    Expired,
    /// Its official account revoked the platform (`on_unauthorized = "end_sessions"`).
    Revoked,
    /// Dropped to keep the store within its capacity.
    Evicted,
}

impl SessionEnd {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Logout => "logout",
            SessionEnd::Expired => "expired",
            SessionEnd::Revoked => "revoked",
            SessionEnd::Evicted => "evicted",
        }
    }
}

/// `count` sessions ended for `reason`.
pub(crate) fn sessions_ended(reason: SessionEnd, count: u64) {
    counter!(names::SESSIONS_ENDED, "reason" => reason.as_str()).increment(count);
}

/// The WeChat API endpoints the crate calls, as a closed set of label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeChatEndpoint {
    /// `cgi-bin/component/api_component_token`.
    ComponentToken,
    /// `sns/oauth2/component/access_token` or `sns/oauth2/access_token`.
    CodeExchange,
    /// `sns/oauth2/component/refresh_token` or `sns/oauth2/refresh_token`.
    Refresh,
    /// `sns/userinfo`.
    UserInfo,
    /// `cgi-bin/component/api_query_auth`.
    QueryAuth,
    /// `cgi-bin/component/api_get_authorizer_info`.
    AuthorizerInfo,
    /// `cgi-bin/component/api_get_authorizer_list`.
    AuthorizerList,
    /// Anything else (none today).
    Other,
}

impl WeChatEndpoint {
    /// The endpoint of an API path (one of `wechat::client::endpoint`).
    pub fn from_path(path: &str) -> Self {
        match path {
            endpoint::COMPONENT_TOKEN => Self::ComponentToken,
            endpoint::COMPONENT_CODE_EXCHANGE | endpoint::OA_CODE_EXCHANGE => Self::CodeExchange,
            endpoint::COMPONENT_REFRESH | endpoint::OA_REFRESH => Self::Refresh,
            endpoint::USER_INFO => Self::UserInfo,
            endpoint::QUERY_AUTH => Self::QueryAuth,
            endpoint::AUTHORIZER_INFO => Self::AuthorizerInfo,
            endpoint::AUTHORIZER_LIST => Self::AuthorizerList,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ComponentToken => "component_token",
            Self::CodeExchange => "code_exchange",
            Self::Refresh => "refresh",
            Self::UserInfo => "userinfo",
            Self::QueryAuth => "query_auth",
            Self::AuthorizerInfo => "authorizer_info",
            Self::AuthorizerList => "authorizer_list",
            Self::Other => "other",
        }
    }
}

/// The label value of an error class.
pub fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Retry => "retry",
        ErrorClass::RefreshToken => "refresh_token",
        ErrorClass::Reauthorize => "reauthorize",
        ErrorClass::Configuration => "configuration",
        ErrorClass::Ticket => "ticket",
        ErrorClass::Quota => "quota",
    }
}

/// Times one WeChat API call. Dropped unfinished (the caller gave up waiting: a deadline) it
/// records the call as `retry`, the class of a timeout.
#[derive(Debug)]
pub(crate) struct WeChatCallTimer {
    endpoint: WeChatEndpoint,
    started: Instant,
    class: Option<&'static str>,
}

impl WeChatCallTimer {
    /// Starts timing a call to `path`.
    pub(crate) fn start(path: &str) -> Self {
        Self {
            endpoint: WeChatEndpoint::from_path(path),
            started: Instant::now(),
            class: None,
        }
    }

    /// The call's result: `ok` or its error's class.
    pub(crate) fn finish<T>(mut self, result: &Result<T, WeChatError>) {
        self.class = Some(match result {
            Ok(_) => "ok",
            Err(e) => class_label(e.class()),
        });
    }
}

impl Drop for WeChatCallTimer {
    fn drop(&mut self) {
        let endpoint = self.endpoint.as_str();
        let class = self.class.unwrap_or(class_label(ErrorClass::Retry));
        counter!(names::WECHAT_REQUESTS, "endpoint" => endpoint, "class" => class).increment(1);
        histogram!(names::WECHAT_DURATION, "endpoint" => endpoint)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A `component_access_token` fetch ended: the new token's expiry (Unix seconds), or a failure.
pub(crate) fn component_token_refresh(result: Result<i64, ()>) {
    let value = match result {
        Ok(expires_at) => {
            component_token_expiry(expires_at);
            "ok"
        }
        Err(()) => "error",
    };
    counter!(names::TOKEN_REFRESHES, "result" => value).increment(1);
}

/// The `component_access_token` in use expires at `expires_at` (Unix seconds).
pub(crate) fn component_token_expiry(expires_at: i64) {
    #[allow(
        clippy::cast_precision_loss,
        reason = "Unix seconds fit an f64 exactly"
    )]
    gauge!(names::TOKEN_EXPIRY).set(expires_at as f64);
}

/// The label value of an accepted push's kind.
pub fn push_kind(event: &PushEvent) -> &'static str {
    match event {
        PushEvent::ComponentVerifyTicket { .. } => "component_verify_ticket",
        PushEvent::Authorized { .. } => "authorized",
        PushEvent::UpdateAuthorized { .. } => "updateauthorized",
        PushEvent::Unauthorized { .. } => "unauthorized",
        _ => "other",
    }
}

/// The label value of why a push was refused: a closed set (`bad_signature`, `decrypt_error`,
/// `wrong_appid`, `too_large`, `malformed`, `store_error`), or the [`AuthError::code`] of a
/// refusal before the push was read (`not_found` outside component mode…).
pub fn push_reason(error: &AuthError) -> &'static str {
    use crate::wechat::crypto::CryptoError;
    match error {
        AuthError::PayloadTooLarge
        | AuthError::WeChat(WeChatError::Push(PushError::Event(EventError::TooLarge { .. }))) => {
            "too_large"
        }
        AuthError::WeChat(WeChatError::Push(PushError::Crypto(CryptoError::InvalidSignature))) => {
            "bad_signature"
        }
        AuthError::WeChat(WeChatError::Push(PushError::Crypto(CryptoError::AppIdMismatch)))
        | AuthError::WeChat(WeChatError::Push(PushError::Event(
            EventError::EnvelopeAppIdMismatch | EventError::EventAppIdMismatch,
        ))) => "wrong_appid",
        AuthError::WeChat(WeChatError::Push(PushError::Crypto(_))) => "decrypt_error",
        AuthError::WeChat(WeChatError::Push(PushError::Event(_))) => "malformed",
        AuthError::WeChat(WeChatError::Store(_)) => "store_error",
        other => other.code(),
    }
}

/// A push to the events endpoint was answered.
pub(crate) fn push(result: &Result<PushEvent, AuthError>) {
    let (kind, value) = match result {
        Ok(event) => (push_kind(event), "accepted"),
        Err(e) => ("unknown", push_reason(e)),
    };
    counter!(names::PUSHES, "kind" => kind, "result" => value).increment(1);
    if let Ok(PushEvent::ComponentVerifyTicket { .. }) = result {
        gauge!(names::TICKET_LAST_ACCEPTED).set(unix_now_f64());
    }
}

/// The answer to a forward-auth request, as a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardAuthResult {
    /// 2xx: the original request may pass.
    Allowed,
    /// 401 or a redirect into the login: no session.
    Denied,
    /// 400/405: the front proxy's description of the request was refused.
    BadRequest,
    /// 403/404: an untrusted caller, an unknown or revoked account, forward auth off.
    Forbidden,
    /// 5xx: a store or WeChat failure (fail closed).
    Error,
}

impl ForwardAuthResult {
    /// The result of an answer with `status`.
    pub fn of(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => Self::Allowed,
            300..=399 | 401 => Self::Denied,
            403 | 404 => Self::Forbidden,
            400..=499 => Self::BadRequest,
            _ => Self::Error,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::Error => "error",
        }
    }
}

/// Records a forward-auth answer and hands it back.
pub(crate) fn forward_auth<B>(response: http::Response<B>) -> http::Response<B> {
    let result = ForwardAuthResult::of(response.status()).as_str();
    counter!(names::FORWARD_AUTH, "result" => result).increment(1);
    response
}

/// Sets the gauges that are sampled rather than recorded: tenants by status and live sessions
/// (`None`: the store cannot tell cheaply, the gauge is not exported).
pub fn sample_gauges(tenants: &[TenantStatus], sessions_active: Option<u64>) {
    const STATUSES: [TenantStatus; 4] = [
        TenantStatus::Active,
        TenantStatus::Configured,
        TenantStatus::NoWebPermission,
        TenantStatus::Revoked,
    ];
    for status in STATUSES {
        let n = tenants.iter().filter(|s| **s == status).count();
        #[allow(clippy::cast_precision_loss, reason = "a count of tenants")]
        gauge!(names::TENANTS, "status" => status.as_str()).set(n as f64);
    }
    if let Some(active) = sessions_active {
        #[allow(clippy::cast_precision_loss, reason = "a count of sessions")]
        gauge!(names::SESSIONS_ACTIVE).set(active as f64);
    }
}

/// Sets [`names::BUILD_INFO`] to 1 with this crate's version.
pub fn record_build_info() {
    gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Now as fractional Unix seconds.
fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Counter of the desktop QR login bridge's ticket events, by `event` (a closed set:
/// `created`, `scanned`, `authorized`, `approved`, `rejected`, `redeemed`, and the refusals
/// `refused_rate_limit`, `refused_full`, `refused_unknown`, `refused_expired`, `refused_used`,
/// `refused_confirm`).
pub const QR_TICKETS: &str = "wxauth_qr_tickets_total";

/// Counts one QR ticket event (`event` from the closed set of [`QR_TICKETS`]).
pub(crate) fn qr_ticket(event: &'static str) {
    counter!(QR_TICKETS, "event" => event).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_constant_has_its_own_label() {
        for path in [
            endpoint::COMPONENT_TOKEN,
            endpoint::COMPONENT_CODE_EXCHANGE,
            endpoint::COMPONENT_REFRESH,
            endpoint::OA_CODE_EXCHANGE,
            endpoint::OA_REFRESH,
            endpoint::USER_INFO,
            endpoint::QUERY_AUTH,
            endpoint::AUTHORIZER_INFO,
            endpoint::AUTHORIZER_LIST,
        ] {
            assert_ne!(
                WeChatEndpoint::from_path(path),
                WeChatEndpoint::Other,
                "{path}"
            );
        }
        assert_eq!(WeChatEndpoint::from_path("/x"), WeChatEndpoint::Other);
    }

    #[test]
    fn forward_auth_results_follow_the_status() {
        let of = |s: u16| ForwardAuthResult::of(StatusCode::from_u16(s).unwrap()).as_str();
        assert_eq!(of(200), "allowed");
        assert_eq!(of(302), "denied");
        assert_eq!(of(401), "denied");
        assert_eq!(of(403), "forbidden");
        assert_eq!(of(400), "bad_request");
        assert_eq!(of(503), "error");
    }

    /// Records requests as the layer does: `(outcome, status)` each.
    fn finish_all(requests: &[(Outcome, Option<StatusCode>)]) {
        for &(outcome, status) in requests {
            let mut timer = RequestTimer::start();
            timer.outcome = outcome;
            timer.finish(status);
        }
    }

    #[test]
    fn a_recorder_installed_after_the_first_requests_counts_the_next_ones() {
        // No recorder yet (a library user who installs one later): a no-op, nothing kept.
        finish_all(&[(Outcome::Forwarded, Some(StatusCode::OK))]);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            finish_all(&[
                (Outcome::Forwarded, Some(StatusCode::OK)),
                (Outcome::Forwarded, Some(StatusCode::NOT_MODIFIED)),
                (Outcome::Forwarded, Some(StatusCode::OK)),
                (Outcome::LoginRedirect, Some(StatusCode::FOUND)),
                (Outcome::Error, None),
            ]);
        });
        let text = handle.render();
        for line in [
            r#"wxauth_requests_total{outcome="forwarded",status_class="2xx"} 2"#,
            r#"wxauth_requests_total{outcome="forwarded",status_class="3xx"} 1"#,
            r#"wxauth_requests_total{outcome="login_redirect",status_class="3xx"} 1"#,
            r#"wxauth_requests_total{outcome="error",status_class="none"} 1"#,
            r#"wxauth_request_duration_seconds_count{outcome="forwarded"} 3"#,
            r#"wxauth_request_duration_seconds_count{outcome="login_redirect"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        // A later recorder (here: another one) gets the requests after it, and only those.
        let later = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let later_handle = later.handle();
        ::metrics::with_local_recorder(&later, || {
            finish_all(&[(Outcome::Skipped, Some(StatusCode::OK))]);
        });
        let text = later_handle.render();
        assert!(
            text.lines()
                .any(|l| l == r#"wxauth_requests_total{outcome="skipped",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(!text.contains("forwarded"), "{text}");
    }

    #[test]
    fn the_static_request_keys_are_the_keys_the_macros_build() {
        let statuses = [
            Some(StatusCode::CONTINUE),
            Some(StatusCode::OK),
            Some(StatusCode::FOUND),
            Some(StatusCode::UNAUTHORIZED),
            Some(StatusCode::SERVICE_UNAVAILABLE),
            None,
        ];
        for (row, outcome) in request_keys::OUTCOMES.into_iter().enumerate() {
            assert_eq!(request_keys::index(outcome), row);
            for status in statuses {
                let built = ::metrics::Key::from_parts(
                    names::REQUESTS,
                    vec![
                        Label::new("outcome", outcome.as_str()),
                        Label::new("status_class", status_class(status)),
                    ],
                );
                let ours = &request_keys::COUNTERS[row][status_class_index(status)];
                assert_eq!(ours, &built, "{outcome:?} {status:?}");
                assert_eq!(ours.get_hash(), built.get_hash());
            }
            let built = ::metrics::Key::from_parts(
                names::REQUEST_DURATION,
                vec![Label::new("outcome", outcome.as_str())],
            );
            assert_eq!(&request_keys::HISTOGRAMS[row], &built);
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(StatusCode::OK)), "2xx");
        assert_eq!(status_class(Some(StatusCode::BAD_GATEWAY)), "5xx");
        assert_eq!(status_class(None), "none");
    }

    /// Every metric name this file defines (`const …: &str = "wxauth_…"`), read from its source
    /// so a new one cannot be forgotten.
    fn defined_names() -> Vec<&'static str> {
        let source = include_str!("metrics.rs");
        let names: Vec<&str> = source
            .split(": &str = \"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(name, _)| name))
            .filter(|name| {
                name.starts_with("wxauth_")
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .collect();
        assert!(names.contains(&QR_TICKETS), "{names:?}");
        assert!(names.contains(&names::BUILD_INFO), "{names:?}");
        names
    }

    /// The metric names in the first column of a README's tables (`| \`wxauth_…\` |`).
    fn table_names(readme: &str) -> Vec<&str> {
        readme
            .lines()
            .filter_map(|line| line.strip_prefix("| `wxauth_"))
            .filter_map(|rest| rest.split_once("` |").map(|(name, _)| name))
            .filter(|name| !name.contains(' '))
            .collect()
    }

    #[test]
    fn the_readme_metrics_tables_list_exactly_the_metrics_defined_here() {
        let defined = defined_names();
        for (file, readme) in [
            ("README.md", include_str!("../README.md")),
            ("README.zh-CN.md", include_str!("../README.zh-CN.md")),
        ] {
            let mut listed: Vec<String> = table_names(readme)
                .into_iter()
                .map(|rest| format!("wxauth_{rest}"))
                .collect();
            listed.sort();
            let mut expected: Vec<String> = defined.iter().map(|n| (*n).to_owned()).collect();
            expected.sort();
            assert_eq!(
                listed, expected,
                "{file}: the metrics table and src/metrics.rs differ"
            );
        }
    }
}
