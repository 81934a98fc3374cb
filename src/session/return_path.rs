//! Where to send the browser after login: a validated same-origin relative path.
//!
//! This is the open-redirect guard (oauth2-proxy GHSA-qqxw-m5fj-f7gv, GHSA-j7px-6hwj-hpjg,
//! GHSA-5m6c-jp6f-2vcv; caddy-security #268). Only a path that a browser resolves against our own
//! origin is accepted: it must start with exactly one `/`, and neither the raw text nor any
//! percent-decoding of it (up to a few layers, for upstreams that decode twice) may turn it into
//! `//host`, `/\host`, or smuggle control characters, backslashes or dot segments.

use std::borrow::Cow;

use percent_encoding::percent_decode;
use serde::{Deserialize, Serialize};

/// Longest return path accepted, in bytes.
pub const MAX_RETURN_PATH_LEN: usize = 2048;

/// How many layers of percent-encoding are examined; a value still changing after that many
/// decodings is refused.
const MAX_DECODE_ROUNDS: usize = 4;

/// A same-origin relative path (with optional query and fragment) that is safe to redirect to.
///
/// Construct with [`ReturnPath::parse`]; the default is `/`. Deserialization validates too, so a
/// value read back from a shared store is as trustworthy as a freshly parsed one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReturnPath(String);

/// Why a return path was refused. Carries no copy of the (attacker-controlled) input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReturnPathError {
    /// Longer than [`MAX_RETURN_PATH_LEN`].
    #[error("return path is too long")]
    TooLong,
    /// Does not start with `/` (absolute URL, scheme, bare host, empty).
    #[error("return path must be a relative path starting with '/'")]
    NotRelative,
    /// Starts with `//` or `/\` (possibly after decoding): a scheme-relative URL to another host.
    #[error("return path must not start with '//' or '/\\'")]
    SchemeRelative,
    /// Contains a backslash in the path (browsers treat it as `/`).
    #[error("return path must not contain a backslash")]
    Backslash,
    /// Contains a control character, whitespace or a non-ASCII byte where it is not allowed.
    #[error("return path contains control, whitespace or non-ASCII characters")]
    ForbiddenCharacter,
    /// Contains a `.` or `..` path segment (possibly after decoding).
    #[error("return path must not contain dot segments")]
    DotSegment,
    /// Percent-encoded more deeply than any legitimate link.
    #[error("return path is percent-encoded too many times")]
    TooManyEncodingLayers,
}

impl ReturnPath {
    /// Validates `input` as a same-origin relative path.
    ///
    /// Accepted: `/`, `/a/b?x=1&q=a%20b`, `/search?q=%E4%B8%AD`, `/app#/home`.
    /// Refused: `//evil`, `/\evil`, any raw backslash, `https://…`, `javascript:…`, control or
    /// raw whitespace characters, encoded control characters anywhere (`%0d%0a`, `%09`, `%00`),
    /// encoded whitespace or slashes right after the leading `/` (`/%20/evil`, `/%2f/evil`),
    /// dot segments, non-ASCII bytes (browsers send them percent-encoded), more than 2048 bytes.
    pub fn parse(input: &str) -> Result<Self, ReturnPathError> {
        if input.len() > MAX_RETURN_PATH_LEN {
            return Err(ReturnPathError::TooLong);
        }
        if !input.starts_with('/') {
            return Err(ReturnPathError::NotRelative);
        }
        for &b in input.as_bytes() {
            if b == b'\\' {
                return Err(ReturnPathError::Backslash);
            }
            // Visible ASCII only: no controls, no raw whitespace, no DEL, no raw non-ASCII.
            if !(0x21..=0x7e).contains(&b) {
                return Err(ReturnPathError::ForbiddenCharacter);
            }
        }

        let split = input.find(['?', '#']).unwrap_or(input.len());
        let (path, rest) = input.split_at(split);
        check_path(path.as_bytes())?;
        check_rest(rest.as_bytes())?;
        Ok(Self(input.to_owned()))
    }

    /// The return path for a request that arrived at `uri` (its path and query), or `/` when
    /// that is not an acceptable return path.
    pub fn from_request_uri(uri: &http::Uri) -> Self {
        uri.path_and_query()
            .and_then(|pq| Self::parse(pq.as_str()).ok())
            .unwrap_or_default()
    }

    /// The validated path, ready for a `Location` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReturnPath {
    fn default() -> Self {
        Self("/".to_owned())
    }
}

impl std::fmt::Display for ReturnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ReturnPath {
    type Error = ReturnPathError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ReturnPath> for String {
    fn from(value: ReturnPath) -> Self {
        value.0
    }
}

/// Checks the path part (before `?`/`#`) at every decoding layer.
fn check_path(raw: &[u8]) -> Result<(), ReturnPathError> {
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(raw);
    for _ in 0..MAX_DECODE_ROUNDS {
        check_path_layer(&current)?;
        let decoded: Cow<'_, [u8]> = percent_decode(&current).into();
        if decoded.as_ref() == current.as_ref() {
            return Ok(());
        }
        current = Cow::Owned(decoded.into_owned());
    }
    check_path_layer(&current)?;
    if percent_decode(&current).eq(current.iter().copied()) {
        Ok(())
    } else {
        Err(ReturnPathError::TooManyEncodingLayers)
    }
}

fn check_path_layer(path: &[u8]) -> Result<(), ReturnPathError> {
    let Some((b'/', after)) = path.split_first() else {
        return Err(ReturnPathError::NotRelative);
    };
    if let Some(b'/' | b'\\') = after.first() {
        return Err(ReturnPathError::SchemeRelative);
    }
    // Whitespace (ASCII or Unicode, e.g. U+00A0, U+3000) right after the slash: browsers strip
    // or normalise it, which can turn `/ /evil` into `//evil`.
    if String::from_utf8_lossy(after)
        .chars()
        .next()
        .is_some_and(char::is_whitespace)
    {
        return Err(ReturnPathError::ForbiddenCharacter);
    }
    if path.contains(&b'\\') {
        return Err(ReturnPathError::Backslash);
    }
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ReturnPathError::ForbiddenCharacter);
    }
    if after
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(ReturnPathError::DotSegment);
    }
    Ok(())
}

/// Checks the query and fragment: no control characters at any decoding layer (encoded spaces
/// and backslashes are ordinary search terms there).
fn check_rest(raw: &[u8]) -> Result<(), ReturnPathError> {
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(raw);
    for _ in 0..MAX_DECODE_ROUNDS {
        if current.iter().any(|&b| b < 0x20 || b == 0x7f) {
            return Err(ReturnPathError::ForbiddenCharacter);
        }
        let decoded: Cow<'_, [u8]> = percent_decode(&current).into();
        if decoded.as_ref() == current.as_ref() {
            return Ok(());
        }
        current = Cow::Owned(decoded.into_owned());
    }
    if current.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(ReturnPathError::ForbiddenCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open-redirect corpus (auth-proxy-anchors §5 item 5 and the advisories it cites).
    const REFUSED: &[&str] = &[
        "",
        "evil.com",
        "https://evil.com",
        "http://evil.com/",
        "HTTPS://evil.com",
        "http:evil.com",
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.com",
        "///evil.com",
        "////evil.com",
        "//evil.com/%2f..",
        "/\\evil.com",
        "/\\/evil.com",
        "\\\\evil.com",
        "\\/evil.com",
        "/a\\b",
        "/%2f/evil.com",
        "/%2F/evil.com",
        "/%2fevil.com",
        "/%2F%2Fevil.com",
        "/%5cevil.com",
        "/%5C%5Cevil.com",
        "/%5c/evil.com",
        "/a/%5c..",
        "/%252f%252fevil.com",
        "/%25252f%25252fevil.com",
        "/%2525252f%2525252fevil.com",
        "/%09/evil.com",
        "/%0d%0a/evil.com",
        "/%0D%0ASet-Cookie:x=y",
        "/a%0d%0aLocation:%20https://evil.com",
        "/%00",
        "/a?x=%00",
        "/a?x=%0d%0aSet-Cookie:x",
        "/a?x=%250d%250a",
        "/a#%0a",
        "/%20/evil.com",
        "/%20%2f/evil.com",
        "/%C2%A0/evil.com",
        "/%E3%80%80/evil.com",
        "/%0b/evil.com",
        "/%7f",
        "/\t/evil.com",
        "/\r\n/evil.com",
        "/ /evil.com",
        " /evil",
        "/evil\u{0}",
        "/\u{3000}/evil.com",
        "/café",
        "/..//evil.com",
        "/../evil",
        "/./evil",
        "/a/../b",
        "/%2e%2e//evil.com",
        "/%2e%2e%2f%2fevil.com",
        "/%2E/evil",
    ];

    const ACCEPTED: &[&str] = &[
        "/",
        "/a",
        "/a/b/c",
        "/a/b?x=1&y=2",
        "/a/b?q=a%20b",
        "/search?q=%E4%B8%AD%E6%96%87",
        "/app#/home",
        "/app/#/home?x=1",
        "/a%2Fb",
        "/files/report%20final.pdf",
        "/a//b",
        "/a?redirect=//evil.com",
        "/a?x=%5c",
        "/.well-known/x",
        "/a/..b",
        "/javascript:alert(1)",
        "/%E4%B8%AD",
    ];

    #[test]
    fn refuses_the_open_redirect_corpus() {
        for input in REFUSED {
            assert!(
                ReturnPath::parse(input).is_err(),
                "accepted a dangerous return path: {input:?}"
            );
        }
    }

    #[test]
    fn accepts_ordinary_paths_unchanged() {
        for input in ACCEPTED {
            let parsed =
                ReturnPath::parse(input).unwrap_or_else(|e| panic!("refused {input:?}: {e}"));
            assert_eq!(parsed.as_str(), *input);
        }
    }

    #[test]
    fn specific_errors() {
        assert_eq!(
            ReturnPath::parse("//x"),
            Err(ReturnPathError::SchemeRelative)
        );
        assert_eq!(
            ReturnPath::parse("/%2f/x"),
            Err(ReturnPathError::SchemeRelative)
        );
        assert_eq!(ReturnPath::parse("/\\x"), Err(ReturnPathError::Backslash));
        assert_eq!(
            ReturnPath::parse("https://x"),
            Err(ReturnPathError::NotRelative)
        );
        assert_eq!(ReturnPath::parse("/../x"), Err(ReturnPathError::DotSegment));
        assert_eq!(
            ReturnPath::parse("/%0a"),
            Err(ReturnPathError::ForbiddenCharacter)
        );
        assert_eq!(
            ReturnPath::parse("/%25252525252f"),
            Err(ReturnPathError::TooManyEncodingLayers)
        );
    }

    #[test]
    fn from_request_uri_falls_back_to_root() {
        let uri: http::Uri = "https://example.com/a/b?c=d".parse().unwrap();
        assert_eq!(ReturnPath::from_request_uri(&uri).as_str(), "/a/b?c=d");
        let uri: http::Uri = "/%2f%2fevil.com/x".parse().unwrap();
        assert_eq!(ReturnPath::from_request_uri(&uri).as_str(), "/");
        let uri: http::Uri = "*".parse().unwrap();
        assert_eq!(ReturnPath::from_request_uri(&uri).as_str(), "/");
    }

    #[test]
    fn length_limit() {
        let ok = format!("/{}", "a".repeat(MAX_RETURN_PATH_LEN - 1));
        assert!(ReturnPath::parse(&ok).is_ok());
        let long = format!("/{}", "a".repeat(MAX_RETURN_PATH_LEN));
        assert_eq!(ReturnPath::parse(&long), Err(ReturnPathError::TooLong));
    }

    #[test]
    fn default_and_serde_validate() {
        assert_eq!(ReturnPath::default().as_str(), "/");
        let json = serde_json::to_string(&ReturnPath::parse("/a?b=1").unwrap()).unwrap();
        assert_eq!(json, "\"/a?b=1\"");
        assert!(serde_json::from_str::<ReturnPath>("\"//evil.com\"").is_err());
        assert_eq!(
            serde_json::from_str::<ReturnPath>("\"/ok\"")
                .unwrap()
                .as_str(),
            "/ok"
        );
    }
}
