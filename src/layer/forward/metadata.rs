//! Reading the metadata headers of a forward-auth request (exactly one value, visible ASCII, no
//! alias spellings) and checking each part of the original request it describes: method,
//! scheme, host and target. The rules are in the module docs of `forward`.

use std::str::FromStr as _;

use http::{
    HeaderMap, Method,
    request::Parts,
    uri::{Authority, PathAndQuery, Scheme},
};

use super::ForwardError;
use crate::identity::same_header_name;
use crate::layer::dispatch::{NormalizedPath, normalize_path};

/// Longest original target (path and query) accepted, in bytes.
pub(super) const MAX_TARGET_LEN: usize = 8 * 1024;

/// Longest original method accepted.
const MAX_METHOD_LEN: usize = 16;

/// Refuses the request when a header is an alias spelling of one of `names` (lower-case
/// canonical names): the same name once `_` and `.` are read as `-`, but not that name.
pub(super) fn refuse_aliases(
    headers: &HeaderMap,
    names: &[&'static str],
) -> Result<(), ForwardError> {
    for key in headers.keys() {
        let key = key.as_str();
        if let Some(name) = names
            .iter()
            .find(|name| key != **name && same_header_name(key, name))
        {
            return Err(ForwardError::Alias(name));
        }
    }
    Ok(())
}

/// The value of header `name` (lower-case), if present: exactly one, non-empty, visible ASCII
/// without control characters (a tab included).
pub(super) fn optional<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, ForwardError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ForwardError::Duplicated(name));
    }
    let text = value.to_str().map_err(|_| ForwardError::NotText(name))?;
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_control()) {
        return Err(ForwardError::NotText(name));
    }
    Ok(Some(text))
}

/// Like [`optional`], but the header must be present.
pub(super) fn required<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<&'h str, ForwardError> {
    optional(headers, name)?.ok_or(ForwardError::Missing(name))
}

/// The host of the forward-auth request itself (what nginx with `X-Original-URI` and Envoy
/// send as the original host): the `Host` header, or the request's authority (HTTP/2
/// `:authority`); both present and different is a conflict.
pub(super) fn own_host(parts: &Parts) -> Result<&str, ForwardError> {
    let header = optional(&parts.headers, "host")?;
    let authority = parts.uri.authority().map(Authority::as_str);
    match (header, authority) {
        (Some(host), Some(authority)) if !host.eq_ignore_ascii_case(authority) => {
            Err(ForwardError::Conflict("host"))
        }
        (Some(host), _) => Ok(host),
        (None, Some(authority)) => Ok(authority),
        (None, None) => Err(ForwardError::Missing("host")),
    }
}

/// 1–16 upper-case ASCII letters, never `CONNECT` (a tunnel is never forwarded).
pub(super) fn method(text: &str) -> Result<Method, ForwardError> {
    if text.is_empty()
        || text.len() > MAX_METHOD_LEN
        || !text.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Err(ForwardError::Method);
    }
    match Method::from_bytes(text.as_bytes()) {
        Ok(method) if method != Method::CONNECT => Ok(method),
        _ => Err(ForwardError::Method),
    }
}

/// `http` or `https` (ASCII case-insensitive).
pub(super) fn scheme(text: &str) -> Result<Scheme, ForwardError> {
    if text.eq_ignore_ascii_case("https") {
        Ok(Scheme::HTTPS)
    } else if text.eq_ignore_ascii_case("http") {
        Ok(Scheme::HTTP)
    } else {
        Err(ForwardError::Scheme)
    }
}

/// `host[:port]`: a valid authority without user info, whose host is a domain name or an IP
/// address (IPv6 in brackets) and whose port, when given, is a number up to 65535.
pub(super) fn authority(text: &str) -> Result<Authority, ForwardError> {
    checked_authority(Authority::from_str(text).map_err(|_| ForwardError::Host)?)
}

/// The checks of [`authority`] on an authority already parsed (from an absolute URL).
pub(super) fn checked_authority(authority: Authority) -> Result<Authority, ForwardError> {
    // `Authority::host` scans the text each time: once here.
    let host = authority.host();
    // `Authority::port` is `None` for a port that is not a `u16` as well as for no port.
    let has_port = authority.as_str().len() > host.len();
    let port_ok = !has_port || authority.port_u16().is_some();
    if authority.as_str().contains('@')
        || !port_ok
        || host.is_empty()
        || url::Host::parse(host).is_err()
    {
        return Err(ForwardError::Host);
    }
    Ok(authority)
}

/// An origin-form target: starts with `/`, at most [`MAX_TARGET_LEN`] bytes, no fragment, valid
/// as a request target, and a path that [`normalize_path`] accepts. Returns the normalized path
/// and the query (as sent).
pub(super) fn target(text: &str) -> Result<(NormalizedPath<'_>, Option<&str>), ForwardError> {
    if !origin_form(text) {
        return Err(ForwardError::Target);
    }
    // The same acceptance as a request line's target (hyper parses those with `http::Uri`).
    PathAndQuery::from_str(text).map_err(|_| ForwardError::Target)?;
    split_target(text)
}

/// The checks of [`target`] on a target that `http` has already parsed as a path and query
/// (the one of an absolute URL).
pub(super) fn parsed_target(
    text: &str,
) -> Result<(NormalizedPath<'_>, Option<&str>), ForwardError> {
    if !origin_form(text) {
        return Err(ForwardError::Target);
    }
    split_target(text)
}

/// Starts with `/`, at most [`MAX_TARGET_LEN`] bytes, no fragment.
fn origin_form(text: &str) -> bool {
    text.starts_with('/') && text.len() <= MAX_TARGET_LEN && !text.contains('#')
}

/// The normalized path and the query (as sent) of an origin-form target.
fn split_target(text: &str) -> Result<(NormalizedPath<'_>, Option<&str>), ForwardError> {
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    let path = normalize_path(path).map_err(ForwardError::Path)?;
    Ok((path, query))
}
