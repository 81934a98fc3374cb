//! Who the user is, as the inner service / upstream receives it.
//!
//! [`Identity`] is stored in the session, projected into the JWT and plain headers, and inserted
//! into the request extensions (`Extension<Identity>` in axum). This module also owns the list of
//! header names the proxy can set, which is stripped from every client request.
//!
//! # Header contract
//!
//! - The JWT travels in one header: [`JWT_HEADER`] (`X-WeChat-Jwt`) by default, or
//!   `Authorization: Bearer <jwt>` when [`JwtCarrier::AuthorizationBearer`] is configured.
//! - Optional plain headers ([`PLAIN_HEADERS`]): `X-WeChat-OpenID`, `X-WeChat-UnionID`,
//!   `X-WeChat-Nickname`, `X-WeChat-Avatar`, `X-WeChat-AppID`. Their values are **percent-encoded
//!   UTF-8**: every byte outside printable ASCII, plus space, `%`, `"` and a few other delimiters,
//!   is written as `%XX`. Decode them with `decodeURIComponent` (JavaScript), `rawurldecode`
//!   (PHP), `URLDecoder` with `+` pre-escaped (Java) or `urllib.parse.unquote` (Python). Nicknames
//!   are CJK and emoji, which HTTP/1.1 header values cannot carry reliably as raw bytes.
//! - Every name the proxy can set — the configured JWT header, the default `X-WeChat-Jwt`,
//!   `Authorization` when it is the JWT carrier, and all plain headers whether enabled or not —
//!   is removed from the client's request before anything else happens, matching names
//!   case-insensitively and treating `_` and `.` like `-` (oauth2-proxy GHSA-vjrc-mh2v-45x6), all
//!   duplicates included.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::ids::{AppId, OpenId, Scope, UnionId};

/// The authenticated WeChat user, as known after `sns/userinfo` (or `snsapi_base`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Per-official-account user id (also the JWT `sub`).
    pub openid: OpenId,
    /// Cross-application id; only when the account is bound to an Open Platform account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<UnionId>,
    /// Nickname as given by WeChat (UTF-8, may contain CJK and emoji); empty for `snsapi_base`.
    #[serde(default)]
    pub nickname: String,
    /// Avatar URL; may be empty and changes when the user changes the avatar.
    #[serde(default)]
    pub avatar: String,
    /// Appid of the official account the user authorized (authorizer appid).
    pub appid: AppId,
    /// Granted scope (`snsapi_userinfo` or `snsapi_base`).
    pub scope: Scope,
}

/// Default name of the header carrying the identity JWT.
pub const JWT_HEADER: HeaderName = HeaderName::from_static("x-wechat-jwt");
/// Plain header carrying the openid (percent-encoded UTF-8).
pub const OPENID_HEADER: HeaderName = HeaderName::from_static("x-wechat-openid");
/// Plain header carrying the unionid, when WeChat gave one (percent-encoded UTF-8).
pub const UNIONID_HEADER: HeaderName = HeaderName::from_static("x-wechat-unionid");
/// Plain header carrying the nickname (percent-encoded UTF-8).
pub const NICKNAME_HEADER: HeaderName = HeaderName::from_static("x-wechat-nickname");
/// Plain header carrying the avatar URL (percent-encoded UTF-8).
pub const AVATAR_HEADER: HeaderName = HeaderName::from_static("x-wechat-avatar");
/// Plain header carrying the authorizer appid (percent-encoded UTF-8).
pub const APPID_HEADER: HeaderName = HeaderName::from_static("x-wechat-appid");

/// Every plain identity header, in a fixed order. Stripped from client requests even when plain
/// headers are disabled, so that an upstream that reads them can never be fooled.
pub const PLAIN_HEADERS: [HeaderName; 5] = [
    OPENID_HEADER,
    UNIONID_HEADER,
    NICKNAME_HEADER,
    AVATAR_HEADER,
    APPID_HEADER,
];

/// Where the identity JWT goes on the request to the inner service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtCarrier {
    /// A dedicated header (default [`JWT_HEADER`]); the value is the bare JWT.
    Header(HeaderName),
    /// `Authorization: Bearer <jwt>`. The client's own `Authorization` header is then removed.
    AuthorizationBearer,
}

impl Default for JwtCarrier {
    fn default() -> Self {
        JwtCarrier::Header(JWT_HEADER)
    }
}

/// How the identity is projected into request headers for the inner service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderSettings {
    /// Where the JWT goes (default: `X-WeChat-Jwt`).
    pub jwt: JwtCarrier,
    /// Also send the plain `X-WeChat-*` headers (default: off — the JWT is the contract).
    pub plain_headers: bool,
}

impl HeaderSettings {
    /// The names removed from every client request under these settings: the configured JWT
    /// header, the default `X-WeChat-Jwt`, `Authorization` when it carries the JWT, and every
    /// plain header.
    pub fn strip_list(&self) -> StripList {
        let mut names = Vec::with_capacity(PLAIN_HEADERS.len() + 2);
        names.push(JWT_HEADER);
        match &self.jwt {
            JwtCarrier::Header(name) => {
                if !names
                    .iter()
                    .any(|n| same_header_name(n.as_str(), name.as_str()))
                {
                    names.push(name.clone());
                }
            }
            JwtCarrier::AuthorizationBearer => names.push(header::AUTHORIZATION),
        }
        names.extend(PLAIN_HEADERS);
        StripList { names }
    }
}

/// A precomputed list of header names to remove from client requests; see
/// [`HeaderSettings::strip_list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripList {
    names: Vec<HeaderName>,
}

impl StripList {
    /// The canonical (lower-case, `-`) names in this list.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    /// Whether `name` is one of ours, ignoring case and treating `_` and `.` like `-`.
    pub fn matches(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|ours| same_header_name(ours.as_str(), name))
    }

    /// Removes every header in `headers` whose name matches this list (all spellings, all
    /// duplicates). Returns how many distinct names were removed (for tracing).
    ///
    /// A `Connection` field cannot nominate one of these names either: such tokens are removed
    /// from it, so that the hop-by-hop removal a proxy does later never deletes a header the
    /// proxy itself sets (`Connection: X-WeChat-Jwt` would otherwise drop the JWT).
    pub fn strip(&self, headers: &mut HeaderMap) -> usize {
        let mut removed = self.strip_connection_options(headers);
        // Fast path: nothing to do in the common case, no allocation.
        if !headers.keys().any(|k| self.matches(k.as_str())) {
            return removed;
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.matches(k.as_str()))
            .cloned()
            .collect();
        for name in &doomed {
            headers.remove(name);
        }
        removed += doomed.len();
        removed
    }

    /// Removes the tokens of every `Connection` field that name one of ours; returns how many.
    fn strip_connection_options(&self, headers: &mut HeaderMap) -> usize {
        retain_connection_tokens(headers, |token| {
            std::str::from_utf8(token).map_or(true, |t| !self.matches(t))
        })
    }
}

/// The non-empty, trimmed tokens of every `Connection` field.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// Keeps only the `Connection` tokens for which `keep` is true (trimmed, non-empty, joined into
/// one field; the field is removed when none is left). Returns how many tokens were dropped;
/// with nothing to drop the fields are left exactly as they were.
pub(crate) fn retain_connection_tokens(
    headers: &mut HeaderMap,
    keep: impl Fn(&[u8]) -> bool,
) -> usize {
    let dropped = connection_tokens(headers).filter(|t| !keep(t)).count();
    if dropped == 0 {
        return 0;
    }
    let kept: Vec<Vec<u8>> = connection_tokens(headers)
        .filter(|t| keep(t))
        .map(<[u8]>::to_vec)
        .collect();
    headers.remove(header::CONNECTION);
    // Joined from valid header-value bytes with ", ": always a valid value.
    if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b", "[..])) {
        if !kept.is_empty() {
            headers.insert(header::CONNECTION, value);
        }
    }
    dropped
}

/// Header-name equality for spoofing purposes: ASCII case-insensitive, `_` and `.` equal to `-`
/// (CGI/PHP, Puma and others fold all three into one variable name).
pub fn same_header_name(a: &str, b: &str) -> bool {
    fn norm(c: u8) -> u8 {
        if c == b'_' || c == b'.' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    }
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// Bytes escaped in plain identity header values, in addition to every non-ASCII byte.
const HEADER_VALUE_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes a UTF-8 string into a header value (see the module docs for the rule).
pub fn encode_header_value(value: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(value, HEADER_VALUE_ESCAPES).to_string();
    // Only visible ASCII remains after encoding, which is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Identity {
    /// Writes the identity into `headers` for the inner service: the JWT (already minted) in its
    /// carrier and, when enabled, the plain headers. Callers strip client copies first.
    pub fn project_headers(
        &self,
        settings: &HeaderSettings,
        jwt: HeaderValue,
        headers: &mut HeaderMap,
    ) {
        match &settings.jwt {
            JwtCarrier::Header(name) => {
                headers.insert(name.clone(), jwt);
            }
            JwtCarrier::AuthorizationBearer => {
                // The issuer may already be configured to prefix `Bearer ` (JwtSettings::value_prefix).
                let value = if jwt.as_bytes().starts_with(b"Bearer ") {
                    Ok(jwt)
                } else {
                    let mut bearer = Vec::with_capacity(7 + jwt.len());
                    bearer.extend_from_slice(b"Bearer ");
                    bearer.extend_from_slice(jwt.as_bytes());
                    HeaderValue::from_bytes(&bearer)
                };
                if let Ok(mut value) = value {
                    value.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, value);
                }
            }
        }
        if settings.plain_headers {
            headers.insert(OPENID_HEADER, encode_header_value(self.openid.as_str()));
            if let Some(unionid) = &self.unionid {
                headers.insert(UNIONID_HEADER, encode_header_value(unionid.as_str()));
            }
            headers.insert(NICKNAME_HEADER, encode_header_value(&self.nickname));
            headers.insert(AVATAR_HEADER, encode_header_value(&self.avatar));
            headers.insert(APPID_HEADER, encode_header_value(self.appid.as_str()));
        }
    }
}

#[cfg(test)]
mod tests;
