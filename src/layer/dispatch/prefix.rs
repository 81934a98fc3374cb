//! [`Prefix`]: the validated prefix of the reserved endpoints (`/_wxauth`).

use std::{fmt, str::FromStr};

use serde::Deserialize;

/// The prefix of the reserved endpoints (default `/_wxauth`), valid by construction: it starts
/// with `/`, has no trailing `/`, and is already normalized (no empty or dot segments, nothing
/// to decode: no `%`, `\`, `;`, `?`, `#`, `*` or control characters), so the normalized path of
/// a request can be compared with it as text.
///
/// Made only by [`Prefix::parse`] (or `TryFrom<String>`, `FromStr`, and serde, which all use
/// it): a configuration file with a bad prefix is refused at the key that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Prefix(String);

/// Why a prefix was refused (see [`Prefix`] for the rule).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "prefix {0:?} must look like \"/_wxauth\": start with '/', no trailing '/', normalized (no \
     empty or dot segments, no '%', '\\\\', ';', '?', '#', '*' or control characters)"
)]
pub struct PrefixError(String);

impl Prefix {
    /// Checks `prefix` against the rule of [`Prefix`].
    ///
    /// # Errors
    /// [`PrefixError`] naming the refused text.
    pub fn parse(prefix: &str) -> Result<Prefix, PrefixError> {
        Prefix::try_from(prefix.to_owned())
    }

    /// The prefix as text (`/_wxauth`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix("/_wxauth".to_owned())
    }
}

impl TryFrom<String> for Prefix {
    type Error = PrefixError;

    fn try_from(prefix: String) -> Result<Self, Self::Error> {
        if is_normalized_absolute(&prefix) {
            Ok(Prefix(prefix))
        } else {
            Err(PrefixError(prefix))
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(prefix: &str) -> Result<Self, Self::Err> {
        Prefix::parse(prefix)
    }
}

impl AsRef<str> for Prefix {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `/a/b`: starts with `/`, no trailing `/`, no empty or dot segments, nothing to decode.
fn is_normalized_absolute(path: &str) -> bool {
    path.starts_with('/')
        && !path.ends_with('/')
        && !path.contains(['%', '\\', ';', '?', '#', '*'])
        && !path.chars().any(char::is_control)
        && path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_must_be_normalized_absolute_paths() {
        for good in ["/_wxauth", "/a/b", "/auth"] {
            assert_eq!(Prefix::parse(good).expect(good).as_str(), good);
            assert_eq!(
                Prefix::try_from(good.to_owned()).expect(good).as_str(),
                good
            );
        }
        for bad in [
            "",
            "_wxauth",
            "/",
            "/_wxauth/",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/a%2f",
            "/a%2e/b",
            "/a\\b",
            "/a;b",
            "/a*",
            "/a?b",
            "/a\nb",
        ] {
            assert!(Prefix::parse(bad).is_err(), "{bad:?}");
            assert!(Prefix::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        assert_eq!(Prefix::default().to_string(), "/_wxauth");
    }

    #[test]
    fn deserializes_through_the_same_rule() {
        let ok: Prefix = serde_json::from_str(r#""/auth""#).expect("valid");
        assert_eq!(ok.as_str(), "/auth");
        let err = serde_json::from_str::<Prefix>(r#""/a/../b""#).expect_err("dot segment");
        assert!(err.to_string().contains("/a/../b"), "{err}");
    }
}
