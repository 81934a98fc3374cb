//! The bridge's random values and what is derived from them: the ticket id (only in the QR
//! link), the desktop's and the phone's cookie secrets (only in their HttpOnly cookies; tickets
//! keep their SHA-256), and the confirmation's CSRF token (bound to the phone's secret and the
//! ticket).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// 128 bits from the OS CSPRNG, base64url (22 characters).
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of a value [`random_token`] makes: what every id and cookie from
/// outside must have before it is hashed or looked up.
pub(super) fn is_token(s: &str) -> bool {
    s.len() == 22 && URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == 16)
}

/// SHA-256 of `secret` under a purpose label, hex.
pub(super) fn digest(purpose: &str, secret: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(purpose.as_bytes());
    hash.update([0]);
    hash.update(secret.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The confirmation's CSRF token: derived from the phone's secret (an HttpOnly cookie another
/// site can neither read nor set) and the ticket id, so a token is good for one phone and one
/// ticket only.
pub(super) fn csrf_token(phone_secret: &str, ticket_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"wxauth-qr-csrf\0");
    hash.update(phone_secret.as_bytes());
    hash.update([0]);
    hash.update(ticket_id.as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.finalize()[..16])
}

/// The two cookies of the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// The desktop that asked (SameSite=Strict: only its own pages send it).
    Desktop,
    /// The phone that scanned (SameSite=Lax: it must come back with the top-level navigation
    /// from WeChat's authorize page to the callback and the confirmation).
    Phone,
}

impl Holder {
    /// The cookie name: `__Host-` prefixed on https (host-only, Secure, `Path=/`, so no
    /// sibling domain can plant or shadow it).
    pub(super) fn name(self, secure: bool) -> &'static str {
        match (self, secure) {
            (Holder::Desktop, true) => "__Host-wxauth_qr",
            (Holder::Desktop, false) => "wxauth_qr",
            (Holder::Phone, true) => "__Host-wxauth_qr_phone",
            (Holder::Phone, false) => "wxauth_qr_phone",
        }
    }

    /// This holder's secret from the request's cookies, if it has a well-formed one.
    pub(super) fn read(self, headers: &HeaderMap, secure: bool) -> Option<String> {
        let name = self.name(secure);
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_owned())
            .filter(|v| is_token(v))
    }

    /// `Set-Cookie` for `secret` (HttpOnly; Secure on https; `max_age` seconds).
    pub(super) fn set(self, secret: &str, secure: bool, max_age: u64) -> HeaderValue {
        let same_site = match self {
            Holder::Desktop => SameSite::Strict,
            Holder::Phone => SameSite::Lax,
        };
        let cookie = Cookie::build((self.name(secure), secret.to_owned()))
            .http_only(true)
            .secure(secure)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age).unwrap_or(i64::MAX),
            ))
            .build();
        HeaderValue::from_str(&cookie.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("wxauth_qr_invalid=; Max-Age=0"))
    }

    /// `Set-Cookie` that removes it.
    pub(super) fn clear(self, secure: bool) -> HeaderValue {
        self.set("", secure, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_and_checked() {
        let a = random_token();
        assert!(is_token(&a));
        assert_ne!(a, random_token());
        assert!(!is_token("short"));
        assert!(!is_token("AAAAAAAAAAAAAAAAAAAAA="));
        assert!(!is_token("AAAAAAAAAAAAAAAAAAAA+A"));
    }

    #[test]
    fn csrf_tokens_bind_phone_and_ticket() {
        let t = csrf_token("phone", "ticket");
        assert_eq!(t, csrf_token("phone", "ticket"));
        assert_ne!(t, csrf_token("other", "ticket"));
        assert_ne!(t, csrf_token("phone", "other"));
        assert_ne!(digest("a", "x"), digest("b", "x"));
    }

    #[test]
    fn cookies_carry_their_attributes() {
        let set = Holder::Desktop.set("v", true, 300);
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-wxauth_qr=v"), "{text}");
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=300",
        ] {
            assert!(text.contains(attr), "{text}");
        }
        let phone = Holder::Phone.set("v", false, 300);
        let text = phone.to_str().unwrap();
        assert!(text.starts_with("wxauth_qr_phone=v") && text.contains("SameSite=Lax"));
        assert!(!text.contains("Secure"));
        let mut h = HeaderMap::new();
        let token = random_token();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("a=b; wxauth_qr={token}")).unwrap(),
        );
        assert_eq!(Holder::Desktop.read(&h, false), Some(token));
        assert_eq!(Holder::Desktop.read(&h, true), None);
    }
}
