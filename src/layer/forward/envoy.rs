//! Envoy's HTTP `ext_authz` (`{prefix}/auth/envoy/<original path>`): Envoy sends the check with
//! the original method, the original path (and query) appended to the configured
//! `path_prefix`, the original `Host` (`:authority`) and the allow-listed headers. The scheme
//! comes from `X-Forwarded-Proto` when Envoy sends it (optional, one value).
//!
//! The path here is the check request's path as the pipeline normalized it; the pipeline has
//! already refused a check path whose original part leaves the prefix
//! ([`escapes_envoy_prefix`](super::escapes_envoy_prefix)), so the part after the prefix is the
//! normalized original path.

use http::request::Parts;

use super::{ForwardError, OriginalRequest, metadata};
use crate::layer::dispatch::Prefix;

const PROTO: &str = "x-forwarded-proto";

/// Segments of `{prefix}/auth/envoy` after the prefix's own.
const SUFFIX_SEGMENTS: usize = 2;

/// Reads the original request (see the module docs).
pub(super) fn parse<'a>(
    parts: &'a Parts,
    prefix: &Prefix,
) -> Result<OriginalRequest<'a>, ForwardError> {
    let headers = &parts.headers;
    metadata::refuse_aliases(headers, &[PROTO])?;
    let scheme = metadata::optional(headers, PROTO)?;
    let host = metadata::own_host(parts)?;
    // The canonical path has the decoded path's segments (no escape decodes to `/`), so the
    // original path starts at the slash after the prefix's segments and `auth/envoy`.
    let skip = prefix.as_str().matches('/').count() + SUFFIX_SEGMENTS;
    let path = parts.uri.path();
    let start = path
        .match_indices('/')
        .nth(skip)
        .map(|(i, _)| i)
        .ok_or(ForwardError::Missing("the original path"))?;
    let target = match parts.uri.path_and_query() {
        Some(pq) if pq.query().is_some() => &pq.as_str()[start..],
        _ => &path[start..],
    };
    OriginalRequest::new(parts.method.as_str(), scheme, host, target)
}
