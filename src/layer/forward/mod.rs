//! Forward auth: a front proxy (nginx, Traefik, Caddy, Envoy) asks whether a request it holds —
//! the *original* request — may pass, and as whom. This module turns what each front proxy
//! sends about the original request into one typed value, [`OriginalRequest`], parsed once and
//! validated strictly; the endpoint (`routes/forward_auth.rs`) then decides with the same code
//! as the inline layer.
//!
//! | file | protocol | where the original request is read from |
//! |---|---|---|
//! | `request.rs` | nginx `auth_request`, ingress-nginx `auth-url` | `X-Original-Method` + `X-Original-URL` (absolute), or `X-Original-URI` + `Host` |
//! | `forwarded.rs` | Traefik `ForwardAuth`, Caddy `forward_auth` | `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` |
//! | `envoy.rs` | Envoy HTTP `ext_authz` | the request line (method, path after `{prefix}/auth/envoy`, query), `Host`, optional `X-Forwarded-Proto` |
//! | `metadata.rs` | all | reading one header value; the checks of method, scheme, host and target |
//!
//! The rules, whatever the protocol (each is a lesson of a published advisory; see the README):
//!
//! - every metadata header must appear exactly once (duplicates are refused, never "first
//!   wins"), as visible ASCII without control characters;
//! - a header whose name is an *alias* of a metadata header (`X_Forwarded_Uri`,
//!   `X.Original.URL`: same name once `_` and `.` are read as `-`) makes the request ambiguous
//!   and is refused: some stacks fold such names into the real one;
//! - `X-Forwarded-Prefix`, `X-Forwarded-Port`, `X-Forwarded-Server` and `Forwarded` are never
//!   read;
//! - the method is 1–16 upper-case letters (never `CONNECT`), the scheme `http` or `https`, the
//!   host a valid authority without user info, the target an origin-form path (and query) of at
//!   most 8 KiB without fragment, whose path [`normalize_path`] accepts — the same function, with
//!   the same refusals, that decides the inline layer's path;
//! - anything else is [`ForwardError`], answered 400: never a 2xx.

mod envoy;
mod forwarded;
mod metadata;
mod request;
mod settings;
#[cfg(test)]
mod tests;

use http::{
    Method,
    request::Parts,
    uri::{Authority, Scheme},
};

pub use self::settings::ForwardAuthSettings;
use super::dispatch::{ENVOY_SUFFIX, ForwardAuthKind, NormalizedPath, PathError, Prefix};
use crate::session::ReturnPath;

/// Why a forward-auth request's description of the original request was refused (answered
/// 400). Names the header at fault, never its (attacker-controlled) value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// A required header is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A header appears more than once.
    #[error("{0} appears more than once")]
    Duplicated(&'static str),
    /// A header spelled like a metadata header with `_` or `.` for `-` is present.
    #[error("an alias spelling of {0} is present")]
    Alias(&'static str),
    /// A header value is empty, not visible ASCII, or holds a control character.
    #[error("{0} is empty or holds control or non-ASCII characters")]
    NotText(&'static str),
    /// The method is not 1–16 upper-case letters, or is `CONNECT`.
    #[error("the original method is not acceptable")]
    Method,
    /// The scheme is not `http` or `https`.
    #[error("the original scheme is not http or https")]
    Scheme,
    /// The host is not a valid authority (`host[:port]`, no user info).
    #[error("the original host is not a valid authority")]
    Host,
    /// The URL is not an absolute `http(s)` URL.
    #[error("the original URL is not an absolute http(s) URL")]
    Url,
    /// The target is not an origin-form path (and query) of at most 8 KiB without a fragment.
    #[error("the original target is not a path and query")]
    Target,
    /// The path has no unambiguous normal form (the inline layer refuses it too).
    #[error("the original path is ambiguous: {0}")]
    Path(PathError),
    /// Two descriptions of the original request disagree (`X-Original-URL` and
    /// `X-Original-URI`, `Host` and the request's authority).
    #[error("{0} disagrees with the rest of the metadata")]
    Conflict(&'static str),
    /// An Envoy check path whose original part would leave `{prefix}/auth/envoy/` once
    /// normalized (`/../`): the path judged would not be the path Envoy forwards.
    #[error("the original path leaves the ext_authz prefix")]
    Escape,
}

/// The original request a front proxy asks about, validated: method, scheme (when the protocol
/// says), host, normalized path and query. Made once per forward-auth request by [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::layer) struct OriginalRequest<'a> {
    method: Method,
    scheme: Option<Scheme>,
    authority: Authority,
    path: NormalizedPath<'a>,
    query: Option<&'a str>,
}

impl<'a> OriginalRequest<'a> {
    /// Checks each part (see the module docs). `scheme` is `None` when the protocol does not
    /// say (nginx with `X-Original-URI`, Envoy without `X-Forwarded-Proto`).
    fn new(
        method: &str,
        scheme: Option<&str>,
        authority: &str,
        target: &'a str,
    ) -> Result<Self, ForwardError> {
        let (path, query) = metadata::target(target)?;
        Ok(Self {
            method: metadata::method(method)?,
            scheme: scheme.map(metadata::scheme).transpose()?,
            authority: metadata::authority(authority)?,
            path,
            query,
        })
    }

    /// [`new`](Self::new) for the parts of an absolute URL that `http::Uri` has already parsed
    /// (`X-Original-URL`): the same checks, without parsing the authority and the target a
    /// second time. `target` is the URL's path and query as `Uri` parsed it, borrowed from the
    /// header.
    fn from_url(
        method: &str,
        scheme: &str,
        authority: &Authority,
        target: &'a str,
    ) -> Result<Self, ForwardError> {
        let (path, query) = metadata::parsed_target(target)?;
        Ok(Self {
            method: metadata::method(method)?,
            scheme: Some(metadata::scheme(scheme)?),
            authority: metadata::checked_authority(authority.clone())?,
            path,
            query,
        })
    }

    /// The original method.
    pub(in crate::layer) fn method(&self) -> &Method {
        &self.method
    }

    /// The original scheme, when the protocol gives one.
    pub(in crate::layer) fn scheme(&self) -> Option<&Scheme> {
        self.scheme.as_ref()
    }

    /// The original host (and port).
    pub(in crate::layer) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The decoded normalized path (what classification matches).
    pub(in crate::layer) fn decoded_path(&self) -> &str {
        self.path.decoded()
    }

    /// Where a login started for this request returns: its canonical path and query, or `/`
    /// when [`ReturnPath`] refuses them.
    pub(in crate::layer) fn return_path(&self) -> ReturnPath {
        let canonical = self.path.canonical();
        let parsed = match self.query {
            Some(query) => ReturnPath::parse(&format!("{canonical}?{query}")),
            None => ReturnPath::parse(canonical),
        };
        parsed.unwrap_or_default()
    }
}

/// Reads the original request from a forward-auth request of protocol `kind` (its path already
/// normalized by the pipeline; `prefix` is the reserved prefix).
pub(in crate::layer) fn parse<'a>(
    kind: ForwardAuthKind,
    parts: &'a Parts,
    prefix: &Prefix,
) -> Result<OriginalRequest<'a>, ForwardError> {
    match kind {
        ForwardAuthKind::Request => request::parse(parts),
        ForwardAuthKind::Forward => forwarded::parse(parts),
        ForwardAuthKind::Envoy => envoy::parse(parts, prefix),
    }
}

/// Whether a raw request path that lies under `{prefix}/auth/envoy/` leaves it once normalized
/// (`{prefix}/auth/envoy/../../x` is `/x`). Envoy appends the original path to that prefix as
/// it is, so such a check request would otherwise be classified as another path altogether;
/// the pipeline refuses it ([`ForwardError::Escape`]).
pub(in crate::layer) fn escapes_envoy_prefix(raw: &str, normalized: &str, prefix: &Prefix) -> bool {
    let under = |path: &str| {
        path.strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_prefix(ENVOY_SUFFIX))
            .is_some_and(|rest| rest.starts_with('/'))
    };
    under(raw) && !under(normalized)
}
