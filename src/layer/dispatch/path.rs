//! Path normalization ([`normalize_path`]) and skip rules ([`SkipRule`]): the rules are in the
//! module docs of `dispatch` ("one path decides and is forwarded").

use std::borrow::Cow;

use http::Method;

/// A public route: requests whose method and normalized path match skip authentication.
///
/// Patterns are either an exact path (`/favicon.ico`) or a subtree ending in `/*`
/// (`/public/*` matches `/public` and everything below it, not `/publicity`). A rule for `GET`
/// also matches `HEAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipRule {
    method: Option<Method>,
    pattern: SkipPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SkipPattern {
    Exact(String),
    /// The subtree root without the trailing `/*` (`/public`), or empty for `/*`.
    Subtree(String),
}

/// Why a skip pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SkipRuleError {
    /// The pattern does not start with `/`.
    #[error("skip pattern must start with '/'")]
    NotAbsolute,
    /// `*` appears anywhere but as a trailing `/*`.
    #[error("skip pattern may only use '*' as a trailing '/*'")]
    Wildcard,
    /// The pattern is not already normalized (dot segments, `%`, `\`, `//`, `;`, controls).
    #[error(
        "skip pattern must be a normalized path (no dot segments, '%', '\\\\', ';', '//', controls)"
    )]
    NotNormalized,
}

impl SkipRule {
    /// A rule for one method (`None` = any method) and a pattern (`/exact` or `/subtree/*`).
    ///
    /// # Errors
    /// [`SkipRuleError`] when the pattern is not an absolute, normalized path with at most a
    /// trailing `/*` wildcard.
    pub fn new(method: Option<Method>, pattern: &str) -> Result<SkipRule, SkipRuleError> {
        if !pattern.starts_with('/') {
            return Err(SkipRuleError::NotAbsolute);
        }
        let (base, subtree) = match pattern.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (pattern, false),
        };
        if base.contains('*') {
            return Err(SkipRuleError::Wildcard);
        }
        if base.contains(['%', '\\', ';', '?', '#'])
            || base.contains("//")
            || base.chars().any(char::is_control)
            || base.split('/').any(|s| s == "." || s == "..")
        {
            return Err(SkipRuleError::NotNormalized);
        }
        let pattern = if subtree {
            SkipPattern::Subtree(base.trim_end_matches('/').to_owned())
        } else {
            SkipPattern::Exact(base.to_owned())
        };
        Ok(SkipRule { method, pattern })
    }

    /// Whether this rule matches a method and an already [normalized](normalize_path) path.
    pub fn matches(&self, method: &Method, normalized_path: &str) -> bool {
        let method_ok = match &self.method {
            None => true,
            Some(m) => m == method || (*m == Method::GET && *method == Method::HEAD),
        };
        method_ok
            && match &self.pattern {
                SkipPattern::Exact(p) => p == normalized_path,
                SkipPattern::Subtree(root) => {
                    root.is_empty()
                        || normalized_path == root
                        || normalized_path
                            .strip_prefix(root.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                }
            }
    }
}

/// Why a request path was refused (see the module docs): it has no unambiguous normal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The target is not an absolute path (`*`, or empty).
    #[error("the request target is not an absolute path")]
    NotAbsolute,
    /// An escape decodes to a path separator (`%2F`, `%5C`), or a raw `\` appears.
    #[error("the path contains an encoded '/' or a backslash")]
    Separator,
    /// A NUL or other control character, raw or escaped.
    #[error("the path contains a control character")]
    Control,
    /// The percent-decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// A dot segment with parameters (`..;x`), read as `..` by some servers.
    #[error("the path contains a dot segment with parameters")]
    DotParameters,
}

/// A request path in normal form: the decoded text that rules are matched against and the
/// canonical, still percent-encoded form that is forwarded. See [`normalize_path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    decoded: Cow<'a, str>,
    canonical: Cow<'a, str>,
}

impl<'a> NormalizedPath<'a> {
    /// The percent-decoded path (what skip rules and reserved routes match).
    pub fn decoded(&self) -> &str {
        &self.decoded
    }

    /// The canonical encoded path (what is forwarded); equal to the raw path when that was
    /// already canonical.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The canonical path, owned when it differs from the raw one (`None` when the raw path is
    /// forwarded unchanged).
    pub fn into_rewrite(self) -> Option<String> {
        match self.canonical {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => Some(path),
        }
    }
}

/// Normalizes a request path (see the module docs): `Err` means the path is ambiguous and the
/// request must be refused.
///
/// # Errors
/// [`PathError`] naming the first ambiguity found.
pub fn normalize_path(raw: &str) -> Result<NormalizedPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_already_normalized(raw) {
        // The common case (every ordinary request): nothing to decode or remove, no allocation;
        // without `%` the decoded and canonical forms are the raw path.
        return Ok(NormalizedPath {
            decoded: Cow::Borrowed(raw),
            canonical: Cow::Borrowed(raw),
        });
    }
    let mut segments: Vec<(String, String)> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in raw.split('/').skip(1) {
        let (decoded, canonical) = normalize_segment(raw_segment)?;
        let before_params = decoded.split(';').next().unwrap_or("");
        if decoded.contains(';') && (before_params == "." || before_params == "..") {
            return Err(PathError::DotParameters);
        }
        trailing_slash = false;
        match decoded.as_str() {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push((decoded, canonical)),
        }
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut canonical = String::with_capacity(raw.len());
    for (d, c) in &segments {
        decoded.push('/');
        decoded.push_str(d);
        canonical.push('/');
        canonical.push_str(c);
    }
    if trailing_slash || decoded.is_empty() {
        decoded.push('/');
        canonical.push('/');
    }
    let canonical = if canonical == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(canonical)
    };
    Ok(NormalizedPath {
        decoded: Cow::Owned(decoded),
        canonical,
    })
}

/// One segment: (fully decoded text, canonical encoding). Unreserved escapes are decoded,
/// every other escape is kept in upper case, raw characters stay as they are.
///
/// Written out rather than with `percent_encoding::percent_decode`, which is lenient (a
/// malformed `%zz` passes through as text) and does not say which octets were escaped — the
/// canonical form needs both (`%3B` and `;` mean different things to some servers).
fn normalize_segment(raw: &str) -> Result<(String, String), PathError> {
    if raw.contains('\\') {
        return Err(PathError::Separator);
    }
    let bytes = raw.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut canonical: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            canonical.push(b);
            i += 1;
            continue;
        }
        let value = match bytes.get(i + 1..i + 3) {
            Some(&[hi, lo]) => hex_value(hi)
                .zip(hex_value(lo))
                .map(|(hi, lo)| hi << 4 | lo)
                .ok_or(PathError::BadEscape)?,
            _ => return Err(PathError::BadEscape),
        };
        decoded.push(value);
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            canonical.push(value);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            canonical.extend_from_slice(&[
                b'%',
                HEX[usize::from(value >> 4)],
                HEX[usize::from(value & 0xf)],
            ]);
        }
        i += 3;
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if decoded.contains(['/', '\\']) {
        return Err(PathError::Separator);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    // Raw bytes of a `&str` plus ASCII escapes: always UTF-8.
    let canonical = String::from_utf8(canonical).map_err(|_| PathError::NotUtf8)?;
    Ok((decoded, canonical))
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A path that [`normalize_path`] would return unchanged: no `%`, `\`, `;`, empty segment
/// (except a trailing `/`) or dot segment. `http::Uri` already refuses control characters.
fn is_already_normalized(raw: &str) -> bool {
    if raw.contains(['%', '\\', ';']) || raw.bytes().any(|b| b.is_ascii_control()) {
        return false;
    }
    let inner = raw[1..].strip_suffix('/').unwrap_or(&raw[1..]);
    raw == "/"
        || inner
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        // (raw, decoded, canonical)
        let cases = [
            ("/", "/", "/"),
            ("/a/b", "/a/b", "/a/b"),
            ("/a//b", "/a/b", "/a/b"),
            ("/a/./b/", "/a/b/", "/a/b/"),
            ("/a/../b", "/b", "/b"),
            ("/../../b", "/b", "/b"),
            ("/public/../private", "/private", "/private"),
            ("/public/%2e%2e/private", "/private", "/private"),
            ("/public/%2E%2E/private", "/private", "/private"),
            ("/public/.%2e/private", "/private", "/private"),
            ("/%70ublic/x", "/public/x", "/public/x"),
            ("/public/..", "/", "/"),
            ("/a%7eb/%7E", "/a~b/~", "/a~b/~"),
            ("/a%20b", "/a b", "/a%20b"),
            ("/a%2bb/c+d", "/a+b/c+d", "/a%2Bb/c+d"),
            ("/%e4%b8%ad/x", "/中/x", "/%E4%B8%AD/x"),
            ("/a;v=1/b", "/a;v=1/b", "/a;v=1/b"),
            ("/a/%3b", "/a/;", "/a/%3B"),
        ];
        for (raw, decoded, canonical) in cases {
            let path = normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(path.decoded(), decoded, "{raw}");
            assert_eq!(path.canonical(), canonical, "{raw}");
            assert_eq!(
                path.clone().into_rewrite().is_none(),
                raw == canonical,
                "{raw}"
            );
        }
        let refused = [
            ("/public%2F..%2Fprivate", PathError::Separator),
            ("/public/..%2fprivate", PathError::Separator),
            ("/public/..%5cprivate", PathError::Separator),
            ("/public/..\\private", PathError::Separator),
            ("/public/..;/private", PathError::DotParameters),
            ("/public/.;x/private", PathError::DotParameters),
            ("/public/%2e%2e%3b/private", PathError::DotParameters),
            ("/public/%00", PathError::Control),
            ("/public/%0a", PathError::Control),
            ("/public/%ff", PathError::NotUtf8),
            ("/public/%zz", PathError::BadEscape),
            ("/public/%4", PathError::BadEscape),
            ("/public/%", PathError::BadEscape),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (raw, error) in refused {
            assert_eq!(normalize_path(raw), Err(error), "{raw}");
        }
        for plain in ["/", "/a", "/a/b/", "/a.b/c..d/.e"] {
            let path = normalize_path(plain).expect("plain path");
            assert!(
                matches!(path.canonical, Cow::Borrowed(p) if p == plain),
                "{plain}"
            );
            assert!(path.into_rewrite().is_none());
        }
    }

    #[test]
    fn skip_patterns_are_validated() {
        assert_eq!(
            SkipRule::new(None, "public/*"),
            Err(SkipRuleError::NotAbsolute)
        );
        assert_eq!(SkipRule::new(None, "/pub*"), Err(SkipRuleError::Wildcard));
        assert_eq!(
            SkipRule::new(None, "/a/../b"),
            Err(SkipRuleError::NotNormalized)
        );
        assert_eq!(
            SkipRule::new(None, "/a%2fb"),
            Err(SkipRuleError::NotNormalized)
        );
        let all = SkipRule::new(None, "/*").expect("rule");
        assert!(all.matches(&Method::GET, "/anything"));
    }
}
