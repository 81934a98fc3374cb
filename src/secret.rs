//! Redacted secret values.
//!
//! Every credential that crosses a module boundary (app secrets, tokens, tickets, codes, cookie
//! keys) is wrapped in a newtype made by [`secret_type!`](crate::secret_type): `Debug` prints `Name([redacted])`,
//! there is no `Display`, equality is constant-time, and the inner value is only reachable through
//! an explicitly named `expose_secret()` (oauth2-rs' pattern). Plain identifiers (appids, openids)
//! are made by [`plain_type!`](crate::plain_type).

use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings (length may leak, content does not).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Defines a secret string newtype: redacted `Debug`, no `Display`, constant-time `PartialEq`.
#[macro_export]
macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// Returns the secret value.
            ///
            /// # Security
            /// Never log or display the returned string.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                $crate::secret::constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }
        impl Eq for $name {}
    };
}

/// Defines a plain (non-secret) identifier newtype with `Debug`, `Display`, `Eq`, `Hash`, serde
/// (transparent), `From<&str>`/`From<String>` and comparison with `str`.
#[macro_export]
macro_rules! plain_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

secret_type!(
    /// A configuration secret (app secret, message token, EncodingAESKey, master secret).
    SecretString
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2-very-secret");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown, "SecretString([redacted])");
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(SecretString::new("a"), SecretString::new("a"));
        assert_ne!(SecretString::new("a"), SecretString::new("b"));
        assert_ne!(SecretString::new("a"), SecretString::new("ab"));
    }
}
