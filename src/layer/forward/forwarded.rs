//! Traefik `ForwardAuth` and Caddy `forward_auth` (`{prefix}/auth/forward`): the original
//! request in `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//! `X-Forwarded-Uri` (path and query), all four required. Both proxies send the check as a
//! `GET` and set these headers themselves (Traefik with `trustForwardHeader: false`, Caddy for
//! any client outside its `trusted_proxies`). `X-Forwarded-Prefix` and `X-Forwarded-Port` are
//! never read (Traefik CVE-2026-35051, CVE-2026-54764).

use http::request::Parts;

use super::{ForwardError, OriginalRequest, metadata};

const METHOD: &str = "x-forwarded-method";
const PROTO: &str = "x-forwarded-proto";
const HOST: &str = "x-forwarded-host";
const URI: &str = "x-forwarded-uri";

/// Reads the original request (see the module docs).
pub(super) fn parse(parts: &Parts) -> Result<OriginalRequest<'_>, ForwardError> {
    let headers = &parts.headers;
    metadata::refuse_aliases(headers, &[METHOD, PROTO, HOST, URI])?;
    OriginalRequest::new(
        metadata::required(headers, METHOD)?,
        Some(metadata::required(headers, PROTO)?),
        metadata::required(headers, HOST)?,
        metadata::required(headers, URI)?,
    )
}
