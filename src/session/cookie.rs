//! The proxy's own cookies: the session cookie (an encrypted [`SessionId`]) and the flow cookie
//! (an encrypted [`FlowCookie`]).
//!
//! Both use the `cookie` crate's private jar (AES-256-GCM, the cookie name as associated data, so a
//! value cannot be moved to another cookie name). The 64-byte cookie key is derived with
//! HKDF-SHA256 from the master secret, so rotating the master secret logs everybody out and
//! nothing else needs a separate key. A tampered, truncated, garbled or foreign-key cookie reads
//! as "absent" — never as an error page.

use std::time::Duration;

use bytes::Bytes;
use cookie::{Cookie, CookieJar, Key, PrivateJar, SameSite};
use hkdf::Hkdf;
use http::{HeaderMap, HeaderValue, header};
use sha2::Sha256;

use super::SessionId;
use super::flow::FlowCookie;
use crate::secret::SecretString;

/// Minimum length of the master secret in bytes (256 bits).
pub const MIN_MASTER_SECRET_LEN: usize = 32;

/// HKDF `info` naming the purpose of the derived key, so the same master secret yields unrelated
/// keys for cookies and for JWT signing.
const COOKIE_KEY_INFO: &[u8] = b"wechat-oauth-proxy v1 cookie encryption key";

/// Prefix that pins a cookie to the exact host, `Secure` and `Path=/` (RFC 6265bis).
const HOST_PREFIX: &str = "__Host-";
/// Prefix that requires `Secure` (used when a `Domain` is set, where `__Host-` is not allowed).
const SECURE_PREFIX: &str = "__Secure-";

/// Names and attributes of the proxy's cookies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Base name of the session cookie (default `wxauth_session`).
    pub name: String,
    /// Base name of the login-flow cookie (default `wxauth_flow`).
    pub flow_name: String,
    /// Send the `Secure` attribute (default `true`). Turn off only for plain-HTTP development.
    pub secure: bool,
    /// Prefix names with `__Host-` when `secure` and no `domain` (default `true`), so that a
    /// sibling subdomain cannot overwrite the cookie.
    pub host_only_prefix: bool,
    /// Optional `Domain` attribute to share the session with subdomains (default none: host-only).
    /// With a domain, the `__Secure-` prefix is used instead of `__Host-`.
    pub domain: Option<String>,
    /// `Max-Age` of the session cookie (default 7 days, the default session lifetime); `None`
    /// makes it a browser-session cookie.
    pub max_age: Option<Duration>,
    /// `Max-Age` of the flow cookie (default 10 minutes, the default flow lifetime).
    pub flow_max_age: Duration,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: "wxauth_session".to_owned(),
            flow_name: "wxauth_flow".to_owned(),
            secure: true,
            host_only_prefix: true,
            domain: None,
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            flow_max_age: Duration::from_secs(10 * 60),
        }
    }
}

/// The cookie key could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CookieKeyError {
    /// The master secret is shorter than [`MIN_MASTER_SECRET_LEN`] bytes.
    #[error("master secret must be at least {MIN_MASTER_SECRET_LEN} bytes, got {0}")]
    MasterSecretTooShort(usize),
    /// Key derivation failed (not expected with valid lengths).
    #[error("cookie key derivation failed")]
    Derivation,
    /// A cookie name is empty or contains characters not allowed in a cookie name.
    #[error("invalid cookie name")]
    InvalidName,
    /// The cookie domain is empty or not a plain host name.
    #[error("invalid cookie domain")]
    InvalidDomain,
}

/// Encodes and decodes the proxy's cookies (`Set-Cookie` values out, `Cookie` headers in).
#[derive(Clone)]
pub struct CookieCodec {
    key: Key,
    session_name: String,
    flow_name: String,
    /// Every name we might have set (with and without prefixes), stripped before upstream.
    own_names: Vec<String>,
    settings: CookieSettings,
}

impl std::fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieCodec")
            .field("key", &"[redacted]")
            .field("session_name", &self.session_name)
            .field("flow_name", &self.flow_name)
            .field("settings", &self.settings)
            .finish()
    }
}

impl CookieCodec {
    /// Builds the codec, deriving the cookie key from `master_secret` (≥ 32 bytes) with
    /// HKDF-SHA256.
    pub fn new(
        master_secret: &SecretString,
        settings: CookieSettings,
    ) -> Result<Self, CookieKeyError> {
        let ikm = master_secret.expose_secret().as_bytes();
        if ikm.len() < MIN_MASTER_SECRET_LEN {
            return Err(CookieKeyError::MasterSecretTooShort(ikm.len()));
        }
        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(None, ikm)
            .expand(COOKIE_KEY_INFO, &mut okm)
            .map_err(|_| CookieKeyError::Derivation)?;
        let key = Key::try_from(&okm[..]).map_err(|_| CookieKeyError::Derivation)?;

        for base in [&settings.name, &settings.flow_name] {
            if !valid_cookie_name(base) {
                return Err(CookieKeyError::InvalidName);
            }
        }
        if let Some(domain) = &settings.domain {
            if !valid_domain(domain) {
                return Err(CookieKeyError::InvalidDomain);
            }
        }
        let prefix = if !settings.secure || !settings.host_only_prefix {
            ""
        } else if settings.domain.is_some() {
            SECURE_PREFIX
        } else {
            HOST_PREFIX
        };
        let session_name = format!("{prefix}{}", settings.name);
        let flow_name = format!("{prefix}{}", settings.flow_name);
        let mut own_names = Vec::with_capacity(6);
        for base in [&settings.name, &settings.flow_name] {
            for p in ["", HOST_PREFIX, SECURE_PREFIX] {
                own_names.push(format!("{p}{base}"));
            }
        }
        Ok(Self {
            key,
            session_name,
            flow_name,
            own_names,
            settings,
        })
    }

    /// The full name of the session cookie (with its prefix, if any).
    pub fn session_cookie_name(&self) -> &str {
        &self.session_name
    }

    /// The full name of the flow cookie (with its prefix, if any).
    pub fn flow_cookie_name(&self) -> &str {
        &self.flow_name
    }

    /// A `Set-Cookie` value carrying `id`, encrypted.
    pub fn session_cookie(&self, id: &SessionId) -> HeaderValue {
        self.encrypted(
            &self.session_name,
            id.expose_secret(),
            self.settings.max_age,
        )
    }

    /// The session id from the request's `Cookie` header(s), if one decrypts and parses.
    pub fn read_session(&self, headers: &HeaderMap) -> Option<SessionId> {
        self.decrypted(headers, &self.session_name, |value| self.session_id(value))
    }

    /// A `Set-Cookie` value that removes the session cookie (logout, stale cookie).
    pub fn removal_cookie(&self) -> HeaderValue {
        self.removal(&self.session_name)
    }

    /// A `Set-Cookie` value carrying the pending-flow payload, encrypted.
    pub fn flow_cookie(&self, payload: &FlowCookie) -> HeaderValue {
        let mut payload = payload.clone();
        payload.enforce_cap();
        // Serializing strings and numbers cannot fail; fall back to an empty payload regardless.
        let json = serde_json::to_string(&payload).unwrap_or_else(|_| "{\"f\":[]}".to_owned());
        self.encrypted(&self.flow_name, json, Some(self.settings.flow_max_age))
    }

    /// The pending-flow payload from the request's `Cookie` header(s), if one decrypts.
    pub fn read_flow(&self, headers: &HeaderMap) -> Option<FlowCookie> {
        self.decrypted(headers, &self.flow_name, |value| {
            match serde_json::from_str::<FlowCookie>(value) {
                Ok(mut payload) => {
                    payload.enforce_cap();
                    Some(payload)
                }
                Err(_) => {
                    tracing::debug!(cookie = %self.flow_name, "flow cookie decrypted to a malformed payload");
                    None
                }
            }
        })
    }

    /// A `Set-Cookie` value that removes the flow cookie (login completed).
    pub fn flow_removal_cookie(&self) -> HeaderValue {
        self.removal(&self.flow_name)
    }

    /// Removes this proxy's cookies from the `Cookie` header(s). A field that holds none of them
    /// is forwarded byte for byte; a field that does is rebuilt from its other cookies as the
    /// client sent them (fragments that do not parse as `name=value` are dropped from it), and
    /// dropped when nothing is left. A field that is not visible ASCII is dropped.
    ///
    /// Call before forwarding a request upstream, so the upstream never sees the session cookie.
    pub fn strip_own_cookies(&self, headers: &mut HeaderMap) {
        let plan = self.plan(headers, |_| {});
        Self::apply(plan, headers);
    }

    /// The session id, as [`CookieCodec::read_session`], and from the same parse of the
    /// `Cookie` fields the work of [`CookieCodec::strip_own_cookies`], to finish with
    /// [`CookieCodec::strip_planned`] once the request goes upstream: a session hit parses its
    /// cookies once.
    pub fn read_session_for_upstream(&self, headers: &HeaderMap) -> (Option<SessionId>, StripPlan) {
        let jar = CookieJar::new();
        let private = jar.private(&self.key);
        let mut session: Option<Option<SessionId>> = None;
        let plan = self.plan(headers, |cookie| {
            if session.is_none() && cookie.name() == self.session_name {
                if let Some(plain) = Self::open(&private, &self.session_name, cookie) {
                    session = Some(self.session_id(plain.value()));
                }
            }
        });
        (session.flatten(), plan)
    }

    /// Removes this proxy's cookies as `plan` (from [`CookieCodec::read_session_for_upstream`]
    /// on these headers) worked out. When the `Cookie` fields are no longer the ones read, they
    /// are stripped afresh ([`CookieCodec::strip_own_cookies`]): the result never depends on the
    /// caller passing the right plan.
    pub fn strip_planned(&self, plan: StripPlan, headers: &mut HeaderMap) {
        let same = match &plan.0 {
            Plan::NoField => !headers.contains_key(header::COOKIE),
            Plan::One(original, _) => {
                let mut fields = headers.get_all(header::COOKIE).iter();
                matches!((fields.next(), fields.next()), (Some(now), None) if now == original)
            }
            Plan::Many(fields) => headers
                .get_all(header::COOKIE)
                .iter()
                .eq(fields.iter().map(|(original, _)| original)),
        };
        if same {
            Self::apply(plan, headers);
        } else {
            self.strip_own_cookies(headers);
        }
    }

    /// What to do with each `Cookie` field of `headers`; `ours` sees each of this proxy's
    /// cookies, in order.
    fn plan<'h>(&self, headers: &'h HeaderMap, mut ours: impl FnMut(Cookie<'h>)) -> StripPlan {
        let mut fields = headers.get_all(header::COOKIE).iter();
        let Some(first) = fields.next() else {
            return StripPlan(Plan::NoField);
        };
        let first_done = self.without_own_cookies(first, &mut ours);
        let Some(second) = fields.next() else {
            return StripPlan(Plan::One(first.clone(), first_done));
        };
        let mut all = vec![(first.clone(), first_done)];
        for field in std::iter::once(second).chain(fields) {
            let done = self.without_own_cookies(field, &mut ours);
            all.push((field.clone(), done));
        }
        StripPlan(Plan::Many(all))
    }

    /// Carries out `plan` on the headers it was made from. The usual single field is replaced
    /// where it is (no removal, no re-insertion); nothing changes when no field holds ours.
    fn apply(plan: StripPlan, headers: &mut HeaderMap) {
        match plan.0 {
            Plan::NoField | Plan::One(_, Stripped::Unchanged) => {}
            Plan::One(_, Stripped::Rebuilt(value)) => {
                headers.insert(header::COOKIE, value);
            }
            Plan::One(_, Stripped::Dropped) => {
                headers.remove(header::COOKIE);
            }
            Plan::Many(fields) => {
                if fields
                    .iter()
                    .all(|(_, done)| matches!(done, Stripped::Unchanged))
                {
                    return;
                }
                headers.remove(header::COOKIE);
                for (original, done) in fields {
                    match done {
                        Stripped::Unchanged => headers.append(header::COOKIE, original),
                        Stripped::Rebuilt(value) => headers.append(header::COOKIE, value),
                        Stripped::Dropped => false,
                    };
                }
            }
        }
    }

    /// One `Cookie` field without this proxy's cookies (each of them passed to `ours`). Its
    /// cookies are parsed with the `cookie` crate; the kept ones are copied as they were sent
    /// (the crate's raw name and value slices), joined with `"; "`.
    fn without_own_cookies<'h>(
        &self,
        field: &'h HeaderValue,
        ours: &mut impl FnMut(Cookie<'h>),
    ) -> Stripped {
        let Ok(text) = field.to_str() else {
            // Not visible ASCII: we cannot parse it, so we cannot prove it holds none of our
            // cookies. Dropping it is the fail-closed choice.
            tracing::debug!("dropping a non-ASCII Cookie header");
            return Stripped::Dropped;
        };
        let mut kept: Option<String> = None;
        let mut removed = false;
        for cookie in Cookie::split_parse(text).filter_map(Result::ok) {
            let name = cookie.name();
            if self.own_names.iter().any(|n| n == name) {
                removed = true;
                ours(cookie);
                continue;
            }
            let name = cookie.name_raw().unwrap_or_else(|| cookie.name());
            let value = cookie.value_raw().unwrap_or_else(|| cookie.value());
            let kept = kept.get_or_insert_with(|| String::with_capacity(text.len()));
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(name);
            kept.push('=');
            kept.push_str(value);
        }
        match (removed, kept) {
            (false, _) => Stripped::Unchanged,
            (true, None) => Stripped::Dropped,
            // Slices of a visible-ASCII field and `"; "`: always a valid value.
            (true, Some(kept)) => HeaderValue::from_maybe_shared(Bytes::from(kept))
                .map_or(Stripped::Dropped, Stripped::Rebuilt),
        }
    }

    fn base_cookie(&self, name: &str, value: String) -> Cookie<'static> {
        let mut builder = Cookie::build((name.to_owned(), value))
            .http_only(true)
            .same_site(SameSite::Lax)
            .path("/")
            .secure(self.settings.secure);
        if let Some(domain) = &self.settings.domain {
            builder = builder.domain(domain.clone());
        }
        builder.build()
    }

    fn encrypted(&self, name: &str, value: String, max_age: Option<Duration>) -> HeaderValue {
        let mut cookie = self.base_cookie(name, value);
        if let Some(age) = max_age {
            cookie.set_max_age(to_cookie_duration(age));
        }
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key).add(cookie);
        let rendered = jar.get(name).map(|c| c.to_string()).unwrap_or_default();
        // Base64 values and validated names are always visible ASCII.
        HeaderValue::from_str(&rendered).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn removal(&self, name: &str) -> HeaderValue {
        let mut cookie = self.base_cookie(name, String::new());
        cookie.make_removal();
        HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Decrypts the first cookie named `name` that authenticates under our key, and reads its
    /// plaintext with `read` (borrowed: no copy of the plaintext).
    fn decrypted<T>(
        &self,
        headers: &HeaderMap,
        name: &str,
        read: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let jar = CookieJar::new();
        let private = jar.private(&self.key);
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else {
                tracing::debug!("ignoring a non-ASCII Cookie header");
                continue;
            };
            for cookie in Cookie::split_parse(text).filter_map(Result::ok) {
                if cookie.name() == name {
                    if let Some(plain) = Self::open(&private, name, cookie) {
                        return read(plain.value());
                    }
                }
            }
        }
        None
    }

    /// `cookie` (named `name`) decrypted, if it authenticates under our key (the private jar
    /// takes an owned cookie).
    fn open(
        private: &PrivateJar<&CookieJar>,
        name: &str,
        cookie: Cookie<'_>,
    ) -> Option<Cookie<'static>> {
        let plain = private.decrypt(cookie.into_owned());
        if plain.is_none() {
            tracing::debug!(cookie = %name, "ignoring a cookie that does not decrypt");
        }
        plain
    }

    /// The session id a decrypted session cookie holds, if it is well-formed.
    fn session_id(&self, value: &str) -> Option<SessionId> {
        let id = SessionId::parse(value);
        if id.is_none() {
            tracing::debug!(cookie = %self.session_name, "session cookie decrypted to a malformed id");
        }
        id
    }
}

/// The removal of this proxy's cookies from a request's `Cookie` fields, worked out by
/// [`CookieCodec::read_session_for_upstream`] and carried out by [`CookieCodec::strip_planned`].
#[derive(Debug)]
pub struct StripPlan(Plan);

/// The `Cookie` fields as they were read, each with what becomes of it.
#[derive(Debug)]
enum Plan {
    NoField,
    One(HeaderValue, Stripped),
    Many(Vec<(HeaderValue, Stripped)>),
}

/// What [`CookieCodec::strip_own_cookies`] does with one `Cookie` field.
#[derive(Debug)]
enum Stripped {
    /// It holds none of our cookies: forwarded byte for byte.
    Unchanged,
    /// Our cookies removed, the others kept.
    Rebuilt(HeaderValue),
    /// Nothing left to forward (only ours, nothing parseable besides, or not ASCII).
    Dropped,
}

fn to_cookie_duration(d: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A host name (letters, digits, `-`, `.`), as the `Domain` attribute expects.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// RFC 6265 token characters (no separators, no controls).
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::flow::{FlowBinding, LoginFlow};
    use crate::session::return_path::ReturnPath;

    fn master() -> SecretString {
        SecretString::new("0123456789abcdef0123456789abcdef-test-only")
    }

    fn codec() -> CookieCodec {
        CookieCodec::new(&master(), CookieSettings::default()).unwrap()
    }

    /// The `name=value` pair of a `Set-Cookie` value, as a browser would send it back.
    fn pair(set_cookie: &HeaderValue) -> String {
        let c = Cookie::parse(set_cookie.to_str().unwrap().to_owned()).unwrap();
        format!("{}={}", c.name(), c.value())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn master_secret_must_be_long_enough() {
        let short = SecretString::new("x".repeat(31));
        assert!(matches!(
            CookieCodec::new(&short, CookieSettings::default()),
            Err(CookieKeyError::MasterSecretTooShort(31))
        ));
        assert!(
            CookieCodec::new(
                &SecretString::new("x".repeat(32)),
                CookieSettings::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_cookie_names_are_refused() {
        for bad in ["", "a b", "a;b", "a=b", "中文"] {
            let settings = CookieSettings {
                name: bad.to_owned(),
                ..CookieSettings::default()
            };
            assert!(matches!(
                CookieCodec::new(&master(), settings),
                Err(CookieKeyError::InvalidName)
            ));
        }
    }

    #[test]
    fn invalid_domains_are_refused() {
        for bad in ["", "a b", "example.com;x=y", "exa\r\nmple.com", "例子.com"] {
            let settings = CookieSettings {
                domain: Some(bad.to_owned()),
                ..CookieSettings::default()
            };
            assert!(matches!(
                CookieCodec::new(&master(), settings),
                Err(CookieKeyError::InvalidDomain)
            ));
        }
    }

    #[test]
    fn session_cookie_round_trip_and_attributes() {
        let codec = codec();
        let id = SessionId::generate();
        let set = codec.session_cookie(&id);
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-wxauth_session="), "{text}");
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Secure",
            "Max-Age=604800",
        ] {
            assert!(text.contains(attr), "missing {attr} in {text}");
        }
        assert!(!text.contains("Domain"), "{text}");
        // The id itself is not visible in the cookie.
        assert!(!text.contains(&id.expose_secret()));
        let read = codec.read_session(&headers(&[&pair(&set)]));
        assert_eq!(read, Some(id));
    }

    #[test]
    fn insecure_dev_cookies_have_no_secure_flag_and_no_prefix() {
        let settings = CookieSettings {
            secure: false,
            max_age: None,
            ..CookieSettings::default()
        };
        let codec = CookieCodec::new(&master(), settings).unwrap();
        let set = codec.session_cookie(&SessionId::generate());
        let text = set.to_str().unwrap();
        assert!(text.starts_with("wxauth_session="), "{text}");
        assert!(!text.contains("Secure"), "{text}");
        assert!(!text.contains("Max-Age"), "{text}");
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Lax"),
            "{text}"
        );
    }

    #[test]
    fn domain_uses_secure_prefix() {
        let settings = CookieSettings {
            domain: Some("example.com".to_owned()),
            ..CookieSettings::default()
        };
        let codec = CookieCodec::new(&master(), settings).unwrap();
        let text = codec
            .session_cookie(&SessionId::generate())
            .to_str()
            .unwrap()
            .to_owned();
        assert!(text.starts_with("__Secure-wxauth_session="), "{text}");
        assert!(text.contains("Domain=example.com"), "{text}");
    }

    #[test]
    fn tampered_truncated_and_foreign_cookies_read_as_absent() {
        let codec = codec();
        let id = SessionId::generate();
        let good = pair(&codec.session_cookie(&id));
        let (name, value) = good.split_once('=').unwrap();

        // Flip one character in the middle of the ciphertext.
        let mut bytes = value.as_bytes().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{name}={}", String::from_utf8(bytes).unwrap());
        assert_eq!(codec.read_session(&headers(&[&flipped])), None);

        let truncated = format!("{name}={}", &value[..value.len() - 4]);
        assert_eq!(codec.read_session(&headers(&[&truncated])), None);
        assert_eq!(codec.read_session(&headers(&[&format!("{name}=")])), None);
        assert_eq!(
            codec.read_session(&headers(&[&format!("{name}=%%%garbage")])),
            None
        );
        assert_eq!(
            codec.read_session(&headers(&[&format!("{name}={}", id.expose_secret())])),
            None
        );
        assert_eq!(codec.read_session(&headers(&[";;;", "==="])), None);
        assert_eq!(codec.read_session(&HeaderMap::new()), None);

        // Encrypted under another master secret.
        let other = CookieCodec::new(
            &SecretString::new("another-master-secret-of-enough-length"),
            CookieSettings::default(),
        )
        .unwrap();
        let foreign = pair(&other.session_cookie(&id));
        assert_eq!(codec.read_session(&headers(&[&foreign])), None);

        // A session value moved under the flow cookie's name does not decrypt (name is AAD).
        let moved = format!("{}={value}", codec.flow_cookie_name());
        assert_eq!(codec.read_flow(&headers(&[&moved])), None);

        // The same value under the unprefixed name is not our cookie.
        assert_eq!(
            codec.read_session(&headers(&[&format!("wxauth_session={value}")])),
            None
        );
    }

    #[test]
    fn non_ascii_cookie_header_is_ignored_not_fatal() {
        let codec = codec();
        let id = SessionId::generate();
        let mut map = HeaderMap::new();
        map.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"a=\xff\xfe").unwrap(),
        );
        map.append(
            header::COOKIE,
            HeaderValue::from_str(&pair(&codec.session_cookie(&id))).unwrap(),
        );
        assert_eq!(codec.read_session(&map), Some(id));
    }

    #[test]
    fn finds_the_valid_cookie_among_many_headers_and_duplicates() {
        let codec = codec();
        let id = SessionId::generate();
        let good = pair(&codec.session_cookie(&id));
        let bogus = format!("{}=bogus", codec.session_cookie_name());
        let map = headers(&[
            "theme=dark; lang=zh",
            &format!("{bogus}; x=1"),
            &format!("y=2; {good}"),
        ]);
        assert_eq!(codec.read_session(&map), Some(id));
    }

    #[test]
    fn removal_cookie_expires_the_cookie() {
        let codec = codec();
        let text = codec.removal_cookie().to_str().unwrap().to_owned();
        assert!(text.starts_with("__Host-wxauth_session=;"), "{text}");
        assert!(text.contains("Max-Age=0"), "{text}");
        assert!(text.contains("Path=/") && text.contains("Secure"), "{text}");
        let flow = codec.flow_removal_cookie().to_str().unwrap().to_owned();
        assert!(
            flow.starts_with("__Host-wxauth_flow=;") && flow.contains("Max-Age=0"),
            "{flow}"
        );
    }

    fn pending(path: &str) -> LoginFlow {
        LoginFlow {
            binding: FlowBinding::generate(),
            return_path: ReturnPath::parse(path).unwrap(),
            created_at: 1_700_000_000,
            appid: None,
            qr: None,
            website: false,
        }
    }

    #[test]
    fn flow_cookie_round_trip_and_cap() {
        let codec = codec();
        let mut payload = FlowCookie::new();
        let flows: Vec<LoginFlow> = (0..3).map(|i| pending(&format!("/p{i}?q=1"))).collect();
        for f in &flows {
            payload.push(f.clone());
        }
        let set = codec.flow_cookie(&payload);
        let text = set.to_str().unwrap();
        assert!(text.starts_with("__Host-wxauth_flow="), "{text}");
        assert!(
            text.contains("Max-Age=600") && text.contains("HttpOnly"),
            "{text}"
        );
        for f in &flows {
            assert!(!text.contains(f.binding.expose_secret()));
            assert!(!text.contains(f.return_path.as_str()));
        }
        let read = codec.read_flow(&headers(&[&pair(&set)])).unwrap();
        assert_eq!(read, payload);

        // A payload with more entries than allowed (forged under our key, or written by another
        // configuration) is capped to the newest.
        let oversized = format!(
            "{{\"f\":[{}]}}",
            (0..6)
                .map(|i| format!("{{\"b\":\"b{i}\",\"r\":\"/\",\"t\":1}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let forged = codec.encrypted(&codec.flow_name, oversized, None);
        let read = codec.read_flow(&headers(&[&pair(&forged)])).unwrap();
        assert_eq!(read.len(), crate::session::flow::MAX_PENDING_FLOWS);
        assert!(read.contains(&FlowBinding::new("b5")));
        assert!(!read.contains(&FlowBinding::new("b0")));

        // A return path that does not validate makes the whole payload unreadable.
        let evil = codec.encrypted(
            &codec.flow_name,
            "{\"f\":[{\"b\":\"x\",\"r\":\"//evil.example\",\"t\":1}]}".to_owned(),
            None,
        );
        assert_eq!(codec.read_flow(&headers(&[&pair(&evil)])), None);

        // The payload of the previous version (bindings only) reads as no pending flow.
        let legacy = codec.encrypted(&codec.flow_name, "{\"b\":[\"x\"]}".to_owned(), None);
        assert_eq!(
            codec.read_flow(&headers(&[&pair(&legacy)])),
            Some(FlowCookie::new())
        );

        // Garbled JSON inside a valid seal reads as absent.
        let garbled = codec.encrypted(&codec.flow_name, "not json".to_owned(), None);
        assert_eq!(codec.read_flow(&headers(&[&pair(&garbled)])), None);
    }

    /// The largest flow cookie the proxy can write: three flows whose return paths fill the
    /// budget, with a `Domain` of 253 characters. Browsers accept 4096 bytes per cookie.
    #[test]
    fn the_worst_case_flow_cookie_stays_well_under_4_kib() {
        use crate::session::flow::MAX_PENDING_RETURN_BYTES;
        use crate::session::return_path::MAX_RETURN_PATH_LEN;
        let domain = format!("{}.example.com", "d".repeat(253 - ".example.com".len()));
        let settings = CookieSettings {
            domain: Some(domain),
            ..CookieSettings::default()
        };
        let codec = CookieCodec::new(&master(), settings).unwrap();
        let longest = format!("/{}", "a".repeat(MAX_RETURN_PATH_LEN - 1));
        let mut worst = 0;
        // One maximal path alone, and the budget split over three flows.
        let third = MAX_PENDING_RETURN_BYTES / 3;
        for paths in [
            vec![longest.clone()],
            vec![format!("/{}", "b".repeat(third - 1)); 3],
        ] {
            let mut payload = FlowCookie::new();
            for p in &paths {
                payload.push(LoginFlow {
                    created_at: u64::MAX,
                    ..pending(p)
                });
            }
            assert_eq!(payload.len(), paths.len());
            let set = codec.flow_cookie(&payload);
            let value_len = pair(&set).len();
            // Measured: 2 885 bytes for one 2048-byte path, 2 369 for three of 512.
            assert!(value_len < 2_950, "name=value is {value_len} bytes");
            worst = worst.max(set.len());
        }
        // Measured: 3 200 bytes with that Domain and every attribute.
        assert!(worst < 3_300, "Set-Cookie is {worst} bytes");
    }

    #[test]
    fn strip_own_cookies_keeps_everything_else() {
        let codec = codec();
        let session = pair(&codec.session_cookie(&SessionId::generate()));
        let flow = pair(&codec.flow_cookie(&FlowCookie::new()));
        let mut map = headers(&[
            &format!("a=1; {session}; b=\"quoted value\"; wxauth_session=plain"),
            &flow,
            &format!("c=x%20y; {flow}; __Secure-wxauth_flow=z"),
        ]);
        map.insert(header::HOST, HeaderValue::from_static("example.com"));
        codec.strip_own_cookies(&mut map);
        let remaining: Vec<&str> = map
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(remaining, vec!["a=1; b=\"quoted value\"", "c=x%20y"]);
        assert_eq!(map.get(header::HOST).unwrap(), "example.com");

        let mut only_ours = headers(&[&session]);
        codec.strip_own_cookies(&mut only_ours);
        assert!(only_ours.get(header::COOKIE).is_none());

        let mut none = HeaderMap::new();
        codec.strip_own_cookies(&mut none);
        assert!(none.is_empty());

        let mut binary = HeaderMap::new();
        binary.append(header::COOKIE, HeaderValue::from_bytes(b"\xff=1").unwrap());
        codec.strip_own_cookies(&mut binary);
        assert!(binary.get(header::COOKIE).is_none());
    }

    #[test]
    fn strip_own_cookies_leaves_foreign_headers_byte_for_byte() {
        let codec = codec();
        // No cookie of ours: the field is forwarded as sent, odd spacing and all.
        let mut map = headers(&["a=1;b=2;  c=\"x y\"", "d=4"]);
        codec.strip_own_cookies(&mut map);
        let remaining: Vec<&str> = map
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(remaining, vec!["a=1;b=2;  c=\"x y\"", "d=4"]);
    }

    #[test]
    fn strip_own_cookies_copies_the_kept_cookies_as_sent() {
        let codec = codec();
        let session = pair(&codec.session_cookie(&SessionId::generate()));
        // One field (replaced where it is), odd spacing, quotes, percent escapes and a fragment
        // that is no `name=value`: the kept cookies' text is the client's, trimmed, joined by
        // "; "; other fields of the request are untouched.
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static("example.com"));
        map.append(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                " a = 1 ;{session};b=\"x y\";;junk; c=%E4%B8%AD ;  __Host-wxauth_flow=f"
            ))
            .unwrap(),
        );
        map.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        codec.strip_own_cookies(&mut map);
        let remaining: Vec<&str> = map
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(remaining, vec!["a=1; b=\"x y\"; c=%E4%B8%AD"]);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(header::ACCEPT).unwrap(), "*/*");

        // Every spelling of our names, in one field and across several.
        for name in [
            "wxauth_session",
            "__Host-wxauth_session",
            "__Secure-wxauth_session",
            "wxauth_flow",
            "__Host-wxauth_flow",
            "__Secure-wxauth_flow",
        ] {
            let mut one = headers(&[&format!("{name}=v; keep=1")]);
            codec.strip_own_cookies(&mut one);
            assert_eq!(one.get_all(header::COOKIE).iter().count(), 1, "{name}");
            assert_eq!(one.get(header::COOKIE).unwrap(), "keep=1", "{name}");

            let mut many = headers(&[&format!("{name}=v"), "keep=2", &format!("x=1;{name}=w")]);
            codec.strip_own_cookies(&mut many);
            let left: Vec<&str> = many
                .get_all(header::COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(left, vec!["keep=2", "x=1"], "{name}");
        }

        // A non-ASCII field is dropped, alone or among others (which stay as sent).
        let mut alone = HeaderMap::new();
        alone.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"k=\xe4\xb8\xad").unwrap(),
        );
        codec.strip_own_cookies(&mut alone);
        assert!(alone.get(header::COOKIE).is_none());
        let mut among = headers(&["a=1;b=2"]);
        among.append(header::COOKIE, HeaderValue::from_bytes(b"k=\xff").unwrap());
        among.append(header::COOKIE, HeaderValue::from_static("c=3"));
        codec.strip_own_cookies(&mut among);
        let left: Vec<&str> = among
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, vec!["a=1;b=2", "c=3"]);
    }

    fn cookie_fields(map: &HeaderMap) -> Vec<String> {
        map.get_all(header::COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn one_parse_reads_the_session_and_strips_as_strip_own_cookies_does() {
        let codec = codec();
        let id = SessionId::generate();
        let session = pair(&codec.session_cookie(&id));
        let flow = pair(&codec.flow_cookie(&FlowCookie::new()));
        let bogus = format!("{}=bogus", codec.session_cookie_name());
        let cases: Vec<Vec<String>> = vec![
            vec![],
            vec!["a=1;b=2".to_owned()],
            vec![format!("_ga=GA1.2.1; {session}; lang=zh_CN")],
            vec![session.clone()],
            vec![bogus.clone()],
            vec![
                format!("{bogus}; x=1"),
                "theme=dark".to_owned(),
                format!("y=2 ;{session}"),
                flow.clone(),
            ],
            vec!["a=1".to_owned(), "b=2".to_owned()],
        ];
        for case in cases {
            let values: Vec<&str> = case.iter().map(String::as_str).collect();
            let mut planned = headers(&values);
            planned.append(header::ACCEPT, HeaderValue::from_static("*/*"));
            let mut stripped = planned.clone();
            let (read, plan) = codec.read_session_for_upstream(&planned);
            assert_eq!(read, codec.read_session(&planned), "{case:?}");
            let expected = if case.iter().any(|f| f.contains(&session)) {
                Some(id.clone())
            } else {
                None
            };
            assert_eq!(read, expected, "{case:?}");
            codec.strip_planned(plan, &mut planned);
            codec.strip_own_cookies(&mut stripped);
            assert_eq!(
                cookie_fields(&planned),
                cookie_fields(&stripped),
                "{case:?}"
            );
            assert_eq!(planned, stripped, "{case:?}");
            assert!(
                cookie_fields(&planned)
                    .iter()
                    .all(|f| !f.contains("wxauth_")),
                "{case:?}"
            );
        }

        // A non-ASCII field: ignored by the read, dropped by the plan.
        let mut map = headers(&[&session]);
        map.append(header::COOKIE, HeaderValue::from_bytes(b"k=\xff").unwrap());
        let (read, plan) = codec.read_session_for_upstream(&map);
        assert_eq!(read, Some(id.clone()));
        codec.strip_planned(plan, &mut map);
        assert!(map.get(header::COOKIE).is_none());
    }

    #[test]
    fn a_plan_for_other_cookie_fields_is_not_followed() {
        let codec = codec();
        let session = pair(&codec.session_cookie(&SessionId::generate()));
        // A field added, replaced, or one of several removed after the read: the plan is of
        // other fields, so they are stripped afresh and ours never get through.
        type Change = fn(&mut HeaderMap, &str);
        let changes: [(&[&str], Change); 4] = [
            (&[], |map, session| {
                map.append(header::COOKIE, HeaderValue::from_str(session).unwrap());
            }),
            (&["a=1"], |map, session| {
                map.append(header::COOKIE, HeaderValue::from_str(session).unwrap());
            }),
            (&["a=1"], |map, session| {
                map.insert(
                    header::COOKIE,
                    HeaderValue::from_str(&format!("a=1; {session}")).unwrap(),
                );
            }),
            (&["a=1", "b=2", "c=3"], |map, session| {
                map.remove(header::COOKIE);
                map.append(header::COOKIE, HeaderValue::from_static("a=1"));
                map.append(
                    header::COOKIE,
                    HeaderValue::from_str(&format!("{session}; b=2")).unwrap(),
                );
            }),
        ];
        for (before, change) in changes {
            let mut map = headers(before);
            let (_, plan) = codec.read_session_for_upstream(&map);
            change(&mut map, &session);
            codec.strip_planned(plan, &mut map);
            let left = cookie_fields(&map);
            assert!(
                left.iter().all(|f| !f.contains("wxauth_")),
                "{before:?}: {left:?}"
            );
            let mut fresh = map.clone();
            codec.strip_own_cookies(&mut fresh);
            assert_eq!(map, fresh, "{before:?}");
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let shown = format!("{:?}", codec());
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
