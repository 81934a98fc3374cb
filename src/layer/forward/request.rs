//! nginx `auth_request` and ingress-nginx `auth-url` (`{prefix}/auth/request`): the original
//! method in `X-Original-Method`; the original URL in `X-Original-URL` (absolute:
//! `$scheme://$host$request_uri`) or, without it, the path and query in `X-Original-URI` and
//! the host in `Host`. With both, they must agree. nginx's subrequest itself is always a `GET`.

use std::str::FromStr as _;

use http::{Uri, request::Parts, uri::Authority};

use super::{ForwardError, OriginalRequest, metadata};

const METHOD: &str = "x-original-method";
const URL: &str = "x-original-url";
const URI: &str = "x-original-uri";

/// Reads the original request (see the module docs).
pub(super) fn parse(parts: &Parts) -> Result<OriginalRequest<'_>, ForwardError> {
    let headers = &parts.headers;
    metadata::refuse_aliases(headers, &[METHOD, URL, URI])?;
    let method = metadata::required(headers, METHOD)?;
    let uri = metadata::optional(headers, URI)?;
    let Some(url) = metadata::optional(headers, URL)? else {
        let target = uri.ok_or(ForwardError::Missing(URL))?;
        return OriginalRequest::new(method, None, metadata::own_host(parts)?, target);
    };
    let (scheme, authority, target) = split_url(url)?;
    if uri.is_some_and(|uri| uri != target) {
        return Err(ForwardError::Conflict(URI));
    }
    // Parsed once: the authority and the target are not parsed again.
    OriginalRequest::from_url(method, scheme, &authority, target)
}

/// An absolute `http(s)` URL as (scheme, authority, path and query), the scheme and the target
/// borrowed from `url`. Parsed with `http::Uri`; the target is the suffix of `url` that `Uri`
/// parsed as the path and query (a fragment is refused first, so nothing follows it).
fn split_url(url: &str) -> Result<(&str, Authority, &str), ForwardError> {
    if url.contains('#') {
        return Err(ForwardError::Url);
    }
    let parsed = Uri::from_str(url).map_err(|_| ForwardError::Url)?;
    let (Some(scheme), Some(authority), Some(target)) = (
        parsed.scheme_str(),
        parsed.authority(),
        parsed.path_and_query(),
    ) else {
        return Err(ForwardError::Url);
    };
    let target = target.as_str();
    let scheme_len = scheme.len();
    let authority_len = authority.as_str().len();
    // `scheme://authority` + target, exactly as sent.
    if url.len() != scheme_len + 3 + authority_len + target.len()
        || !url.ends_with(target)
        || !target.starts_with('/')
    {
        return Err(ForwardError::Url);
    }
    Ok((
        &url[..scheme_len],
        authority.clone(),
        &url[url.len() - target.len()..],
    ))
}
