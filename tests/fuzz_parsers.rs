//! Property-based fuzzing of every parser that sees attacker input (issue 9).
//!
//! Each property runs a modest number of cases by default so that `cargo test` stays fast; a
//! longer run sets `PROPTEST_CASES` (see BENCHMARKS.md, "Fuzzing"):
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test --release --test fuzz_parsers
//! ```
//!
//! The parsers and their properties:
//! - return paths ([`ReturnPath`]): never panic; whatever is accepted is a same-origin relative
//!   path at every percent-decoding layer and re-validates to itself; generated open-redirect
//!   shapes are refused; ordinary paths are accepted unchanged;
//! - the proxy's cookies ([`CookieCodec`]): arbitrary `Cookie` headers never panic and never
//!   yield a session or a flow; a genuine cookie with one byte changed, truncated or extended
//!   never decodes; a genuine cookie among junk still does;
//! - identity header stripping ([`StripList`]): every spelling of every header the proxy sets
//!   is gone after `strip`, every other header is untouched;
//! - push XML and crypto ([`events`], [`MsgCrypt`]): arbitrary input never panics;
//!   encrypt → decrypt round-trips; a tampered push or signature is refused;
//! - `Accept` ([`dispatch::accept_prefers_html`], [`dispatch::is_browser_navigation`]): never
//!   panics, agrees with the documented rule, and the rule's monotonic consequences hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use proptest::prelude::*;
use proptest::sample::select;

use wechat_oauth_proxy::identity::{HeaderSettings, JwtCarrier, StripList};
use wechat_oauth_proxy::layer::dispatch;
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::return_path::MAX_RETURN_PATH_LEN;
use wechat_oauth_proxy::session::{
    CookieCodec, CookieSettings, FlowBinding, FlowCookie, LoginFlow, ReturnPath, ReturnPathError,
    SessionId,
};
use wechat_oauth_proxy::wechat::crypto::{CryptoError, MsgCrypt};
use wechat_oauth_proxy::wechat::events::{self, PushEvent, PushQuery};
use wechat_oauth_proxy::wechat::{ComponentAppId, VerifyTicket};

/// Cases per property in a plain `cargo test`; `PROPTEST_CASES` overrides it.
const CASES: u32 = 3_000;

/// The proptest configuration: [`CASES`] unless `PROPTEST_CASES` is set.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        // A failure prints its minimal input; no regression files are written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    // The reject limits are absolute counts: let them grow with a long run, so that a filter
    // rejecting a few percent of the cases does not abort it.
    config.max_global_rejects = config.max_global_rejects.max(config.cases / 10);
    config.max_local_rejects = config.max_local_rejects.max(config.cases);
    // A known failure should not spend minutes shrinking in a long run.
    config.max_shrink_iters = config.max_shrink_iters.min(20_000);
    config
}

/// `text` percent-encoded `layers` times, every byte encoded on the first layer (hex digits in
/// upper or lower case), and `%` re-encoded as `%25` on every further layer.
fn encode_layers(text: &str, layers: u32, upper: bool) -> String {
    if layers == 0 {
        return text.to_owned();
    }
    let mut out: String = text
        .bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    for _ in 1..layers {
        out = out.replace('%', "%25");
    }
    out
}

/// One character or byte sequence, raw or percent-encoded 1 to 3 times.
fn maybe_encoded(text: &'static str) -> impl Strategy<Value = String> {
    (0u32..=3, any::<bool>()).prop_map(move |(layers, upper)| encode_layers(text, layers, upper))
}

/// A header value built from arbitrary bytes, when `http` accepts them as one.
fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

mod return_path {
    use super::*;

    /// Every percent-decoding layer of `raw`, the raw text first, up to a fixpoint (at most 8).
    fn decode_layers(raw: &str) -> Vec<Vec<u8>> {
        let mut layers = vec![raw.as_bytes().to_vec()];
        for _ in 0..8 {
            let last = layers.last().cloned().unwrap_or_default();
            let next: Vec<u8> = percent_encoding::percent_decode(&last).collect();
            if next == last {
                break;
            }
            layers.push(next);
        }
        layers
    }

    fn is_control(b: u8) -> bool {
        b < 0x20 || b == 0x7f
    }

    /// The invariants of an accepted return path, checked independently of the parser: the
    /// rules of its documentation, plus what a WHATWG URL parser (a browser, or an upstream
    /// that decodes and re-resolves) makes of every decoding layer.
    fn assert_safe(input: &str, parsed: &ReturnPath) -> Result<(), TestCaseError> {
        let text = parsed.as_str();
        prop_assert_eq!(text, input, "accepted paths are kept verbatim");
        prop_assert!(text.len() <= MAX_RETURN_PATH_LEN);
        prop_assert!(text.starts_with('/'));
        prop_assert!(!text.starts_with("//") && !text.starts_with("/\\"));
        prop_assert!(
            text.bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'\\'),
            "raw control, whitespace, non-ASCII or backslash accepted: {:?}",
            text
        );
        let split = text.find(['?', '#']).unwrap_or(text.len());
        let (path, rest) = text.split_at(split);
        let path_layers = decode_layers(path);
        prop_assert!(
            path_layers.len() <= 5,
            "more than 4 encoding layers: {:?}",
            text
        );
        for layer in &path_layers {
            prop_assert_eq!(layer.first(), Some(&b'/'));
            prop_assert!(
                !matches!(layer.get(1), Some(b'/' | b'\\')),
                "scheme-relative after decoding: {:?}",
                text
            );
            prop_assert!(
                !layer.contains(&b'\\'),
                "backslash after decoding: {:?}",
                text
            );
            prop_assert!(
                !layer.iter().copied().any(is_control),
                "control character after decoding: {:?}",
                text
            );
            let after = String::from_utf8_lossy(&layer[1..]);
            prop_assert!(
                !after.chars().next().is_some_and(char::is_whitespace),
                "whitespace right after the leading slash: {:?}",
                text
            );
            prop_assert!(
                !layer[1..]
                    .split(|&b| b == b'/')
                    .any(|seg| seg == b"." || seg == b".."),
                "dot segment: {:?}",
                text
            );
        }
        for layer in decode_layers(rest) {
            prop_assert!(
                !layer.iter().copied().any(is_control),
                "control character in query or fragment: {:?}",
                text
            );
        }
        // Same origin for a browser, at every layer an upstream might decode to.
        let base = url::Url::parse("https://proxy.example/dir/page").map_err(fail)?;
        for layer in decode_layers(text) {
            let candidate = String::from_utf8_lossy(&layer).into_owned();
            if let Ok(joined) = base.join(&candidate) {
                prop_assert_eq!(
                    joined.origin(),
                    base.origin(),
                    "leaves the origin: {:?}",
                    text
                );
            }
        }
        // Re-validates to itself, directly and through serde (a value read back from a store).
        prop_assert_eq!(ReturnPath::parse(text), Ok(parsed.clone()));
        let json = serde_json::to_string(parsed).map_err(fail)?;
        let back: ReturnPath = serde_json::from_str(&json).map_err(fail)?;
        prop_assert_eq!(&back, parsed);
        Ok(())
    }

    fn fail(e: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    /// Path-like text: slashes, dots, backslashes, percent escapes (also of `%` itself, of
    /// whitespace and of non-ASCII), query and fragment markers, and arbitrary characters.
    fn pathish() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            4 => select(vec!["/", "a", "Z", "0", ".", "..", "?", "#", "=", "&", "~", "-", "_"])
                .prop_map(str::to_owned),
            2 => select(vec!["\\", " ", "\t", "\n", "\r", "\0", "\u{7f}", ":", "@", "%", "\u{a0}", "\u{3000}", "é"])
                .prop_map(str::to_owned),
            3 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
            1 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
            1 => any::<u8>().prop_map(|b| format!("%25{b:02x}")),
            1 => any::<u8>().prop_map(|b| format!("%2525{b:02X}")),
            1 => any::<char>().prop_map(String::from),
        ];
        (
            prop_oneof![4 => Just("/"), 1 => Just("")],
            prop::collection::vec(token, 0..24),
        )
            .prop_map(|(lead, tokens)| format!("{lead}{}", tokens.concat()))
    }

    /// An ordinary path that must be accepted: segments of unreserved characters and harmless
    /// escapes, an optional query (where encoded spaces and backslashes are search terms) and
    /// an optional fragment.
    fn ordinary() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            4 => "[A-Za-z0-9_~-]{1,8}",
            1 => "[a-z]{1,4}(%20|%41|%E4%B8%AD|%2F|%2e%2e)[a-z]{0,4}",
            1 => "\\.[a-z]{1,6}",
            1 => "\\.\\.[a-z]{1,3}",
        ];
        let query = prop::option::of("[a-z]{1,5}=([A-Za-z0-9]|%20|%5C|%E4%B8%AD|//evil){0,6}");
        let fragment = prop::option::of("/?[a-z]{0,6}");
        (
            prop::collection::vec(segment, 0..6),
            any::<bool>(),
            query,
            fragment,
        )
            .prop_map(|(segments, trailing, query, fragment)| {
                let mut out = format!("/{}", segments.join("/"));
                if trailing && !segments.is_empty() {
                    out.push('/');
                }
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(&q);
                }
                if let Some(f) = fragment {
                    out.push('#');
                    out.push_str(&f);
                }
                out
            })
    }

    /// An ordinary path split in tokens at positions where something can be inserted without
    /// cutting a percent escape in two: `(path tokens, query-and-fragment tokens)`.
    fn ordinary_tokens() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
        let path = prop::collection::vec(
            prop_oneof![
                3 => "[A-Za-z0-9_~-]{1,4}",
                1 => Just("%41".to_owned()),
                1 => Just("/".to_owned()),
            ],
            1..8,
        );
        let rest = prop::collection::vec(
            prop_oneof![
                3 => "[A-Za-z0-9=&]{1,4}",
                1 => Just("%20".to_owned()),
                1 => Just("#".to_owned()),
            ],
            0..6,
        );
        (path, rest).prop_map(|(mut path, rest)| {
            path.insert(0, "/x".to_owned());
            let rest = if rest.is_empty() {
                rest
            } else {
                std::iter::once("?".to_owned()).chain(rest).collect()
            };
            (path, rest)
        })
    }

    /// Inserts `bad` between two tokens of `tokens`, never before the first one (which holds
    /// the leading `/x`), and joins everything.
    fn insert_between(
        (path, rest): (Vec<String>, Vec<String>),
        bad: &str,
        index: prop::sample::Index,
        in_path_only: bool,
    ) -> String {
        let mut all: Vec<String> = path.to_vec();
        let path_len = all.len();
        all.extend(rest);
        let slots = if in_path_only { path_len } else { all.len() };
        let at = 1 + index.index(slots);
        all.insert(at, bad.to_owned());
        all.concat()
    }

    /// A host-like text for the `//host` shapes.
    fn host() -> impl Strategy<Value = String> {
        "([a-z0-9-]{1,12}\\.)?[a-z0-9-]{1,12}\\.[a-z]{2,6}(:[0-9]{1,5})?(/[a-z]{0,6})?"
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn never_panics_and_accepts_only_safe_paths(input in prop_oneof![pathish(), any::<String>()]) {
            if let Ok(parsed) = ReturnPath::parse(&input) {
                assert_safe(&input, &parsed)?;
            }
        }

        #[test]
        fn ordinary_paths_are_accepted_unchanged(input in ordinary()) {
            let parsed = ReturnPath::parse(&input);
            prop_assert!(parsed.is_ok(), "refused {:?}: {:?}", input, parsed);
            if let Ok(parsed) = parsed {
                assert_safe(&input, &parsed)?;
            }
        }

        /// Absolute URLs, `scheme:` forms, bare hosts, anything not starting with `/`.
        #[test]
        fn absolute_and_non_slash_inputs_are_refused(
            scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,10}",
            slashes in select(vec!["", "/", "//", "\\\\", "/\\", "///"]),
            host in host(),
            junk in any::<String>(),
        ) {
            let url = format!("{scheme}:{slashes}{host}");
            prop_assert!(ReturnPath::parse(&url).is_err(), "accepted {:?}", url);
            let prefixed = format!("{}{}", junk.chars().next().unwrap_or('x'), "/a");
            if !prefixed.starts_with('/') {
                prop_assert!(ReturnPath::parse(&prefixed).is_err(), "accepted {:?}", prefixed);
            }
            if !junk.starts_with('/') {
                prop_assert!(ReturnPath::parse(&junk).is_err(), "accepted {:?}", junk);
            }
        }

        /// `//host`, `/\host` and their encoded forms (`/%2f`, `/%5C`, `/%252f`…), and
        /// whitespace right after the leading slash, raw or encoded (`/%09/host`, `/%20/host`,
        /// `/%C2%A0/host`, `/%E3%80%80/host`).
        #[test]
        fn scheme_relative_shapes_are_refused(
            first in prop_oneof![
                maybe_encoded("/"),
                maybe_encoded("\\"),
                maybe_encoded(" "),
                maybe_encoded("\t"),
                maybe_encoded("\n"),
                maybe_encoded("\r"),
                maybe_encoded("\u{b}"),
                maybe_encoded("\u{c}"),
                maybe_encoded("\u{85}"),
                maybe_encoded("\u{a0}"),
                maybe_encoded("\u{1680}"),
                maybe_encoded("\u{2002}"),
                maybe_encoded("\u{2028}"),
                maybe_encoded("\u{202f}"),
                maybe_encoded("\u{3000}"),
            ],
            second in prop_oneof![Just(String::new()), maybe_encoded("/"), maybe_encoded("\\")],
            host in host(),
        ) {
            let input = format!("/{first}{second}{host}");
            prop_assert!(ReturnPath::parse(&input).is_err(), "accepted {:?}", input);
        }

        /// A control character, raw or encoded up to three times, anywhere (path, query or
        /// fragment) of an otherwise ordinary path.
        #[test]
        fn control_characters_anywhere_are_refused(
            tokens in ordinary_tokens(),
            control in prop_oneof![0u8..0x20, Just(0x7fu8)],
            layers in 0u32..=3,
            upper in any::<bool>(),
            index in any::<prop::sample::Index>(),
        ) {
            let raw = char::from(control).to_string();
            let bad = encode_layers(&raw, layers, upper);
            let input = insert_between(tokens, &bad, index, false);
            prop_assert!(ReturnPath::parse(&input).is_err(), "accepted {:?}", input);
        }

        /// A raw backslash anywhere, or an encoded one in the path.
        #[test]
        fn backslashes_are_refused(
            tokens in ordinary_tokens(),
            layers in 0u32..=3,
            upper in any::<bool>(),
            index in any::<prop::sample::Index>(),
        ) {
            let in_path_only = layers > 0;
            let input = insert_between(tokens, &encode_layers("\\", layers, upper), index, in_path_only);
            prop_assert!(ReturnPath::parse(&input).is_err(), "accepted {:?}", input);
        }

        /// Raw whitespace or non-ASCII anywhere.
        #[test]
        fn raw_whitespace_and_non_ascii_are_refused(
            tokens in ordinary_tokens(),
            c in prop_oneof![
                select(vec![' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{a0}', '\u{3000}']),
                prop::char::range('\u{80}', char::MAX),
            ],
            index in any::<prop::sample::Index>(),
        ) {
            let input = insert_between(tokens, &c.to_string(), index, false);
            prop_assert!(ReturnPath::parse(&input).is_err(), "accepted {:?}", input);
        }

        /// A `.` or `..` segment, any of its dots encoded up to three times.
        #[test]
        fn dot_segments_are_refused(
            before in prop::collection::vec("[a-z0-9]{1,5}", 0..4),
            dots in prop::collection::vec(maybe_encoded("."), 1..=2),
            after in prop::option::of("[a-z0-9]{0,5}(\\?[a-z=]{0,5})?"),
        ) {
            let mut input = String::from("/");
            for segment in &before {
                input.push_str(segment);
                input.push('/');
            }
            input.push_str(&dots.concat());
            if let Some(after) = after {
                if !after.starts_with('?') {
                    input.push('/');
                }
                input.push_str(&after);
            }
            prop_assert_eq!(ReturnPath::parse(&input), Err(ReturnPathError::DotSegment), "{:?}", input);
        }

        /// Anything encoded more deeply than four layers, and anything too long.
        #[test]
        fn deep_encodings_and_long_inputs_are_refused(
            prefix in "/[a-z]{1,6}",
            layers in 5u32..=8,
            byte in any::<u8>(),
            extra in 1usize..64,
        ) {
            let deep = format!("{prefix}{}", encode_layers(&char::from(byte).to_string(), layers, true));
            prop_assert!(ReturnPath::parse(&deep).is_err(), "accepted {:?}", deep);
            let long = format!("{prefix}{}", "a".repeat(MAX_RETURN_PATH_LEN + extra));
            prop_assert_eq!(ReturnPath::parse(&long), Err(ReturnPathError::TooLong));
        }
    }
}

mod cookies {
    use super::*;

    /// Every name the proxy's cookies can have (default settings, all prefixes).
    const OWN_NAMES: [&str; 6] = [
        "wxauth_session",
        "__Host-wxauth_session",
        "__Secure-wxauth_session",
        "wxauth_flow",
        "__Host-wxauth_flow",
        "__Secure-wxauth_flow",
    ];

    fn codec() -> CookieCodec {
        CookieCodec::new(
            &SecretString::new("fuzz-master-secret-0123456789abcdef-not-secret"),
            CookieSettings::default(),
        )
        .unwrap()
    }

    /// Which of the proxy's cookies a property is about.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Session,
        Flow,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Session), Just(Kind::Flow)]
    }

    /// A genuine cookie of `kind` as a browser sends it back (`name=value`), and a check that
    /// a `Cookie` header decodes to exactly what was sealed.
    struct Genuine {
        pair: String,
        session: Option<SessionId>,
        flow: Option<FlowCookie>,
    }

    impl Genuine {
        fn new(codec: &CookieCodec, kind: Kind, seed: [u8; 16], flows: usize) -> Self {
            let (set_cookie, session, flow) = match kind {
                Kind::Session => {
                    let id = SessionId::from_bytes(seed);
                    (codec.session_cookie(&id), Some(id), None)
                }
                Kind::Flow => {
                    let mut payload = FlowCookie::new();
                    for i in 0..flows {
                        payload.push(LoginFlow {
                            binding: FlowBinding::generate(),
                            return_path: ReturnPath::parse(&format!("/page/{i}?q=1"))
                                .expect("a valid return path"),
                            created_at: 1_700_000_000 + i as u64,
                            appid: None,
                            qr: None,
                            website: false,
                        });
                    }
                    (codec.flow_cookie(&payload), None, Some(payload))
                }
            };
            let text = set_cookie.to_str().unwrap();
            let pair = text.split(';').next().unwrap().to_owned();
            Self {
                pair,
                session,
                flow,
            }
        }

        /// Whether `headers` decode to the sealed value (`true`) or to nothing (`false`);
        /// anything else (another value) fails the property.
        fn decodes(&self, codec: &CookieCodec, headers: &HeaderMap) -> Result<bool, TestCaseError> {
            let session = codec.read_session(headers);
            let flow = codec.read_flow(headers);
            match (&self.session, &self.flow) {
                (Some(id), _) => {
                    prop_assert!(flow.is_none(), "a session cookie read as a flow");
                    prop_assert!(
                        session.is_none() || session.as_ref() == Some(id),
                        "decoded to another session"
                    );
                    Ok(session.is_some())
                }
                (_, Some(payload)) => {
                    prop_assert!(session.is_none(), "a flow cookie read as a session");
                    prop_assert!(
                        flow.is_none() || flow.as_ref() == Some(payload),
                        "decoded to another flow"
                    );
                    Ok(flow.is_some())
                }
                (None, None) => Err(TestCaseError::fail("no genuine value")),
            }
        }
    }

    fn one_header(bytes: &[u8]) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, header_value(bytes)?);
        Some(headers)
    }

    /// `Cookie` header values: arbitrary bytes, arbitrary text, and cookie lists whose names
    /// are the proxy's own (with and without prefixes) and whose values look like ours
    /// (base64 of the right lengths, quoted, percent-encoded).
    fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
        let name = select(vec![
            "__Host-wxauth_session",
            "__Host-wxauth_flow",
            "wxauth_session",
            "__Secure-wxauth_session",
            "__HOST-WXAUTH_SESSION",
            "x",
            "",
        ]);
        let value = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| STANDARD.encode(b)),
            prop::collection::vec(any::<u8>(), 48..52).prop_map(|b| STANDARD.encode(b)),
            prop::collection::vec(any::<u8>(), 0..120)
                .prop_map(|b| format!("\"{}\"", STANDARD.encode(b))),
            "[ -~]{0,80}",
        ];
        let pairs = prop::collection::vec((name, value), 0..5).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
                .into_bytes()
        });
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            any::<String>().prop_map(String::into_bytes),
            pairs,
        ]
    }

    /// Bytes that can extend a cookie value: visible ASCII except `;` (which ends the cookie)
    /// and whitespace (trimmed by every cookie parser).
    fn extension() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((0x21u8..=0x7e).prop_filter("not ;", |b| *b != b';'), 1..4)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_cookie_headers_never_yield_a_session(values in prop::collection::vec(cookie_header(), 0..4)) {
            let codec = codec();
            let mut headers = HeaderMap::new();
            for bytes in &values {
                if let Some(value) = header_value(bytes) {
                    headers.append(header::COOKIE, value);
                }
            }
            prop_assert!(codec.read_session(&headers).is_none());
            prop_assert!(codec.read_flow(&headers).is_none());
            // Stripping never panics and leaves none of the proxy's cookies behind.
            codec.strip_own_cookies(&mut headers);
            for value in headers.get_all(header::COOKIE) {
                let text = value.to_str().unwrap_or_default();
                for cookie in cookie::Cookie::split_parse(text).filter_map(Result::ok) {
                    prop_assert!(!OWN_NAMES.contains(&cookie.name()), "kept {:?}", cookie.name());
                }
            }
        }

        #[test]
        fn a_genuine_cookie_with_one_byte_changed_never_decodes(
            kind in kind(),
            seed in any::<[u8; 16]>(),
            flows in 0usize..4,
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let codec = codec();
            let genuine = Genuine::new(&codec, kind, seed, flows);
            let mut bytes = genuine.pair.clone().into_bytes();
            let at = index.index(bytes.len());
            prop_assume!(bytes[at] != byte);
            bytes[at] = byte;
            if let Some(headers) = one_header(&bytes) {
                prop_assert!(!genuine.decodes(&codec, &headers)?, "decoded after changing byte {} of {:?}", at, genuine.pair);
            }
        }

        #[test]
        fn a_truncated_or_extended_genuine_cookie_never_decodes(
            kind in kind(),
            seed in any::<[u8; 16]>(),
            flows in 0usize..4,
            start in any::<prop::sample::Index>(),
            front in any::<bool>(),
            insert_at in any::<prop::sample::Index>(),
            extra in extension(),
        ) {
            let codec = codec();
            let genuine = Genuine::new(&codec, kind, seed, flows);
            let bytes = genuine.pair.as_bytes();
            // Truncated: at least one byte dropped from the front or from the back.
            let cut = 1 + start.index(bytes.len());
            let (from, to) = if front { (cut, bytes.len()) } else { (0, bytes.len() - cut) };
            if let Some(headers) = one_header(&bytes[from..to]) {
                prop_assert!(!genuine.decodes(&codec, &headers)?, "decoded {:?}", &genuine.pair[from..to]);
            }
            // Extended: bytes inserted anywhere (name, `=` or value; at the end too).
            let at = insert_at.index(bytes.len() + 1);
            let mut extended = bytes[..at].to_vec();
            extended.extend_from_slice(&extra);
            extended.extend_from_slice(&bytes[at..]);
            if let Some(headers) = one_header(&extended) {
                prop_assert!(!genuine.decodes(&codec, &headers)?, "decoded with {:?} inserted at {}", extra, at);
            }
        }

        #[test]
        fn a_genuine_cookie_among_junk_still_decodes(
            kind in kind(),
            seed in any::<[u8; 16]>(),
            before in prop::collection::vec(cookie_header(), 0..3),
            after in "[ -~]{0,100}",
            same_header in any::<bool>(),
        ) {
            let codec = codec();
            let genuine = Genuine::new(&codec, kind, seed, 1);
            let mut headers = HeaderMap::new();
            for junk in &before {
                if let Some(value) = header_value(junk) {
                    headers.append(header::COOKIE, value);
                }
            }
            if same_header {
                headers.append(header::COOKIE, header_value(format!("{after}; {}; {after}", genuine.pair).as_bytes()).unwrap());
            } else {
                headers.append(header::COOKIE, header_value(genuine.pair.as_bytes()).unwrap());
                headers.append(header::COOKIE, header_value(after.as_bytes()).unwrap());
            }
            prop_assert!(genuine.decodes(&codec, &headers)?, "lost among junk");
        }
    }
}

mod identity_headers {
    use super::*;

    /// Header-name equality for spoofing purposes as the design states it: ASCII
    /// case-insensitive, `_` and `.` equal to `-`.
    fn same_name(a: &str, b: &str) -> bool {
        fn norm(c: u8) -> u8 {
            match c {
                b'_' | b'.' => b'-',
                c => c.to_ascii_lowercase(),
            }
        }
        a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
    }

    /// Every header configuration that changes what the proxy sets: the default, plain headers
    /// on, `Authorization: Bearer` as the carrier, and a custom JWT header.
    fn settings() -> impl Strategy<Value = HeaderSettings> {
        let carrier = prop_oneof![
            Just(JwtCarrier::default()),
            Just(JwtCarrier::AuthorizationBearer),
            "x-[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}"
                .prop_map(|n| JwtCarrier::Header(HeaderName::from_bytes(n.as_bytes()).unwrap())),
        ];
        (carrier, any::<bool>())
            .prop_map(|(jwt, plain_headers)| HeaderSettings { jwt, plain_headers })
    }

    /// One spelling of `name`: each letter in either case, each `-` replaced by one of `seps`.
    fn spelling(name: String, seps: &'static [char]) -> impl Strategy<Value = String> {
        let n = name.len();
        (
            prop::collection::vec(any::<bool>(), n),
            prop::collection::vec(select(seps), n),
        )
            .prop_map(move |(upper, sep)| {
                name.chars()
                    .enumerate()
                    .map(|(i, c)| match c {
                        '-' => sep[i],
                        c if upper[i] => c.to_ascii_uppercase(),
                        c => c,
                    })
                    .collect()
            })
    }

    /// Header names that are not ours but close: one character added, removed or changed,
    /// everyday headers, and random tokens. Those that happen to equal one of ours under
    /// [`same_name`] are dropped by the property, not here.
    fn other_name(ours: Vec<String>) -> impl Strategy<Value = String> {
        let near = (
            select(ours),
            any::<prop::sample::Index>(),
            select(vec!['x', '1', '-', '_', '.']),
            0u8..3,
        )
            .prop_map(|(name, at, c, how)| {
                let mut chars: Vec<char> = name.chars().collect();
                let i = at.index(chars.len());
                match how {
                    0 => chars.insert(i, c),
                    1 => {
                        chars.remove(i);
                    }
                    _ => chars[i] = c,
                }
                chars.into_iter().collect::<String>()
            });
        prop_oneof![
            3 => near,
            2 => select(vec![
                "accept", "cookie", "authorization", "x-forwarded-for", "x-wechat-other",
                "x-wechat", "wechat-jwt", "x-real-ip", "x_custom", "x.custom",
            ])
            .prop_map(str::to_owned),
            2 => "[a-zA-Z0-9._-]{1,24}",
        ]
    }

    /// A header of a generated request: name, value, and whether it is a spelling of one of
    /// the proxy's names (`false`: another header, which may still collide by chance).
    type Header = (String, String, bool);

    /// Settings and a request whose headers are spellings (with duplicates) of the names the
    /// proxy sets, interleaved with other headers.
    fn request(seps: &'static [char]) -> impl Strategy<Value = (StripList, Vec<Header>)> {
        settings().prop_flat_map(move |settings| {
            let list = settings.strip_list();
            let ours: Vec<String> = list.names().iter().map(|n| n.as_str().to_owned()).collect();
            let spelled = prop::collection::vec(
                select(ours.clone()).prop_flat_map(move |n| spelling(n, seps)),
                1..12,
            );
            let others = prop::collection::vec((other_name(ours), "[ -~]{0,12}"), 0..8);
            (Just(list), spelled, others).prop_flat_map(|(list, spelled, others)| {
                let mut all: Vec<Header> = spelled
                    .into_iter()
                    .map(|n| (n, "forged".to_owned(), true))
                    .collect();
                all.extend(others.into_iter().map(|(n, v)| (n, v, false)));
                (Just(list), Just(all).prop_shuffle())
            })
        })
    }

    /// Strips `request` and checks that no spelling of the proxy's names is left and that
    /// every other header is untouched (same values, same order). Other headers that collide
    /// with one of the proxy's names by chance (`x.wechat-jwt` among the near misses) are left
    /// out of the request, so that a property restricted to some separators tests only those.
    fn check_strip(list: &StripList, request: &[Header]) -> Result<(), TestCaseError> {
        let ours: Vec<&str> = list.names().iter().map(HeaderName::as_str).collect();
        let is_ours = |name: &str| ours.iter().any(|o| same_name(o, name));
        let mut headers = HeaderMap::new();
        let mut others: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
        for (name, value, spelling) in request {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            if !spelling && is_ours(name.as_str()) {
                continue;
            }
            headers.append(name.clone(), value.clone());
            if !is_ours(name.as_str()) {
                match others.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, values)) => values.push(value),
                    None => others.push((name, vec![value])),
                }
            }
        }
        list.strip(&mut headers);
        for name in headers.keys() {
            prop_assert!(!is_ours(name.as_str()), "{} survived the strip", name);
        }
        for (name, values) in &others {
            let kept: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
            prop_assert_eq!(
                kept,
                values.iter().collect::<Vec<_>>(),
                "{} was touched",
                name
            );
        }
        prop_assert_eq!(
            headers.len(),
            others.iter().map(|(_, v)| v.len()).sum::<usize>()
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        /// Any case, `-` or `_` in any position, duplicates, interleaved with other headers.
        #[test]
        fn strip_removes_every_dash_and_underscore_spelling((list, request) in request(&['-', '_'])) {
            check_strip(&list, &request)?;
        }

        /// The same with `.` as a third separator (issue 9, finding 5).
        #[test]
        fn strip_removes_every_dot_spelling((list, request) in request(&['-', '_', '.'])) {
            check_strip(&list, &request)?;
        }
    }
}

mod push {
    use super::*;

    const TOKEN: &str = "fuzz_token";
    const TS: &str = "1700000000";
    const NONCE: &str = "1320562132";

    /// A valid EncodingAESKey: 32 bytes, 43 base64 characters.
    fn aes_key(bytes: [u8; 32]) -> SecretString {
        SecretString::new(STANDARD_NO_PAD.encode(bytes))
    }

    fn crypt(key: [u8; 32], appid: &str) -> MsgCrypt {
        MsgCrypt::new(
            &SecretString::new(TOKEN),
            &aes_key(key),
            ComponentAppId::new(appid),
        )
        .unwrap()
    }

    fn default_crypt() -> MsgCrypt {
        crypt([7; 32], "wx0123456789abcdef")
    }

    /// Ciphertext-like text: arbitrary strings, base64 of arbitrary bytes, and base64 of whole
    /// AES blocks (which get past the length checks into the padding and layout checks).
    fn ciphertext() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| STANDARD.encode(b)),
            (1usize..12)
                .prop_flat_map(|blocks| prop::collection::vec(any::<u8>(), blocks * 16))
                .prop_map(|b| STANDARD.encode(b)),
        ]
    }

    /// XML-like text: elements named like the push fields (or not), text with entities,
    /// CDATA, comments, processing instructions, attributes, DOCTYPEs and stray markup.
    fn xmlish() -> impl Strategy<Value = String> {
        let name = select(vec![
            "xml",
            "AppId",
            "Encrypt",
            "InfoType",
            "CreateTime",
            "ComponentVerifyTicket",
            "AuthorizerAppid",
            "ToUserName",
            "a",
            "xml:x",
            "XML",
        ]);
        let leaf = prop_oneof![
            "[ -~]{0,16}".prop_map(|t| t.replace(['<', '&'], "")),
            select(vec![
                "&amp;",
                "&lt;",
                "&#x41;",
                "&#0;",
                "&#xFFFFFFFF;",
                "&bogus;",
                "&",
                "<",
                "]]>",
                "component_verify_ticket",
                "authorized",
                "unauthorized",
                "1700000000",
                "-9223372036854775809",
                "99999999999999999999",
                "wx0123456789abcdef",
            ])
            .prop_map(str::to_owned),
            "[ -~]{0,16}".prop_map(|t| format!("<![CDATA[{t}]]>")),
            "[a-z ]{0,8}".prop_map(|t| format!("<!--{t}-->")),
            Just("<?xml version=\"1.0\"?>".to_owned()),
            Just("<!DOCTYPE xml [<!ENTITY e \"x\">]>".to_owned()),
            any::<String>(),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            (
                name.clone(),
                prop::option::of("[a-z]{1,4}=\"[ -~]{0,6}\""),
                prop::collection::vec(inner, 0..6),
                0u8..4,
            )
                .prop_map(|(name, attr, children, shape)| {
                    let attr = attr
                        .map(|a| format!(" {}", a.replace(['<', '&'], "")))
                        .unwrap_or_default();
                    let body = children.concat();
                    match shape {
                        0 => format!("<{name}{attr}/>"),
                        1 => format!("<{name}{attr}>{body}"),
                        _ => format!("<{name}{attr}>{body}</{name}>"),
                    }
                })
        })
    }

    /// A realistic ticket, or any text that CDATA can carry (`]]>` included).
    fn ticket_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "ticket@@@[A-Za-z0-9_-]{1,86}",
            "[!-~]([ -~]{0,40}[!-~])?",
            "[!-~]{0,8}\\]\\]>[!-~]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn push_parsers_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..300),
            xml in xmlish(),
            query in prop_oneof![any::<String>(), "((timestamp|nonce|msg_signature|encrypt_type|signature|x)=[a-z0-9%+]{0,6}&?){0,8}"],
        ) {
            let _ = events::parse_envelope(&bytes);
            let _ = events::parse_envelope(xml.as_bytes());
            let _ = events::parse_event(&xml);
            let _ = events::parse_event(&String::from_utf8_lossy(&bytes));
            let _ = PushQuery::from_query(&query);
        }

        /// Whatever the XML says, a DOCTYPE (and so any entity declaration) is never parsed.
        #[test]
        fn xml_with_a_doctype_is_refused(before in xmlish(), after in xmlish()) {
            let doc = format!("<!DOCTYPE xml [<!ENTITY t \"ticket\">]>{before}<xml><AppId>wx</AppId><Encrypt>&t;</Encrypt></xml>{after}");
            prop_assert!(events::parse_envelope(doc.as_bytes()).is_err());
            prop_assert!(events::parse_event(&doc).is_err());
        }

        #[test]
        fn crypto_never_panics_on_arbitrary_input(
            token in any::<String>(),
            key in prop_oneof![any::<String>(), "[A-Za-z0-9+/]{43}", "[A-Za-z0-9+/=_-]{42,45}"],
            appid in any::<String>(),
            encrypt in ciphertext(),
            signature in prop_oneof![any::<String>(), "[0-9a-f]{40}"],
        ) {
            if let Ok(crypt) = MsgCrypt::new(&SecretString::new(token.clone()), &SecretString::new(key.clone()), ComponentAppId::new(appid)) {
                prop_assert!(crypt.decrypt(&encrypt).is_err(), "decrypted a random ciphertext");
                prop_assert!(crypt.verify_msg_signature(TS, NONCE, &encrypt, &signature).is_err() || signature == crypt.sign(TS, NONCE, &encrypt));
                prop_assert!(crypt.verify_plain_signature(TS, NONCE, &signature).is_err() || signature == crypt.sign_plain(TS, NONCE));
                if let Ok(rotated) = crypt.clone().with_previous_key(&SecretString::new(key)) {
                    prop_assert!(rotated.decrypt(&encrypt).is_err());
                }
            }
            let crypt = default_crypt();
            prop_assert!(crypt.decrypt(&encrypt).is_err(), "decrypted a random ciphertext");
            prop_assert!(crypt.verify_msg_signature(TS, NONCE, &encrypt, &signature).is_err());
        }

        #[test]
        fn encrypt_then_decrypt_round_trips(
            key in any::<[u8; 32]>(),
            previous in any::<[u8; 32]>(),
            appid in any::<String>(),
            other_appid in any::<String>(),
            msg in any::<String>(),
            random in any::<[u8; 16]>(),
        ) {
            let current = crypt(key, &appid);
            let encrypt = current.encrypt_with_random(&msg, &random);
            prop_assert_eq!(current.decrypt(&encrypt), Ok(msg.clone()));
            prop_assert!(current.verify_msg_signature(TS, NONCE, &encrypt, &current.sign(TS, NONCE, &encrypt)).is_ok());
            // During a key rotation, a push sealed with the previous key still opens.
            let old = crypt(previous, &appid).encrypt_with_random(&msg, &random);
            let rotated = current.clone().with_previous_key(&aes_key(previous)).unwrap();
            prop_assert_eq!(rotated.decrypt(&old), Ok(msg.clone()));
            prop_assert_eq!(rotated.decrypt(&encrypt), Ok(msg.clone()));
            // Addressed to another component: refused, whatever the two appids are.
            if other_appid != appid {
                prop_assert_eq!(crypt(key, &other_appid).decrypt(&encrypt), Err(CryptoError::AppIdMismatch));
            }
        }

        /// `msg_signature` is SHA-1 over the sorted, concatenated `(token, timestamp, nonce,
        /// Encrypt)`: any change to the signature, or to a signed part that changes that
        /// concatenation, is refused.
        #[test]
        fn a_tampered_signature_or_signed_part_is_refused(
            msg in any::<String>(),
            part in 0usize..4,
            index in any::<prop::sample::Index>(),
            c in prop_oneof![any::<char>(), select(vec!['0', 'a', 'f', 'A', '=', '+'])],
        ) {
            let crypt = default_crypt();
            let encrypt = crypt.encrypt(&msg);
            let signature = crypt.sign(TS, NONCE, &encrypt);
            let mut parts = [TS.to_owned(), NONCE.to_owned(), encrypt.clone(), signature.clone()];
            let target = &mut parts[part];
            let mut chars: Vec<char> = target.chars().collect();
            let at = index.index(chars.len());
            prop_assume!(chars[at] != c);
            chars[at] = c;
            *target = chars.into_iter().collect();
            let [ts, nonce, enc, sig] = &parts;
            let signed = |t: &str, n: &str, e: &str| {
                let mut v = [TOKEN, t, n, e];
                v.sort_unstable();
                v.concat()
            };
            let same_bytes = signed(ts, nonce, enc) == signed(TS, NONCE, &encrypt);
            let verdict = crypt.verify_msg_signature(ts, nonce, enc, sig);
            if part == 3 || !same_bytes {
                prop_assert_eq!(verdict, Err(CryptoError::InvalidSignature));
            }
        }

        /// A sealed ticket push opens to the same ticket; the push with any one byte of its
        /// body or query changed opens to nothing or to that same event, never to another one;
        /// a change inside `Encrypt` or `msg_signature` is always refused.
        #[test]
        fn a_tampered_push_never_opens_to_another_event(
            ticket in ticket_text(),
            create_time in any::<i64>(),
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            target in 0u8..3,
        ) {
            let crypt = default_crypt();
            let xml = events::ticket_event_xml(crypt.appid(), create_time, &VerifyTicket::new(ticket.clone()));
            let (query, body) = events::seal_push(&crypt, &xml, TS, NONCE);
            let parsed = PushQuery::from_query(&query).unwrap();
            let event = events::open_push(&crypt, &parsed, body.as_bytes()).unwrap();
            match &event {
                PushEvent::ComponentVerifyTicket { ticket: t, create_time: ct, app_id } => {
                    prop_assert_eq!(t.expose_secret(), ticket.as_str());
                    prop_assert_eq!(*ct, create_time);
                    prop_assert_eq!(app_id, crypt.appid());
                }
                other => prop_assert!(false, "opened to {:?}", other),
            }
            let envelope = events::parse_envelope(body.as_bytes()).unwrap();
            let (mut query_bytes, mut body_bytes) = (query.clone().into_bytes(), body.clone().into_bytes());
            let must_refuse = match target {
                // Any byte of the body.
                0 => {
                    let at = index.index(body_bytes.len());
                    prop_assume!(body_bytes[at] != byte);
                    body_bytes[at] = byte;
                    false
                }
                // A byte of the ciphertext, as another base64 character.
                1 => {
                    let start = body.find(&envelope.encrypt).unwrap();
                    let at = start + index.index(envelope.encrypt.len());
                    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                    let replacement = b64[usize::from(byte) % 64];
                    prop_assume!(body_bytes[at] != replacement);
                    body_bytes[at] = replacement;
                    true
                }
                // A character of msg_signature.
                _ => {
                    let start = query.find("msg_signature=").unwrap() + "msg_signature=".len();
                    let at = start + index.index(40);
                    let replacement = b"0123456789abcdefABCDEF"[usize::from(byte) % 22];
                    prop_assume!(query_bytes[at] != replacement);
                    query_bytes[at] = replacement;
                    true
                }
            };
            let query = String::from_utf8_lossy(&query_bytes);
            if let Ok(q) = PushQuery::from_query(&query) {
                if let Ok(opened) = events::open_push(&crypt, &q, &body_bytes) {
                    prop_assert!(!must_refuse, "a tampered push opened");
                    prop_assert_eq!(opened, event, "a tampered push opened to another event");
                }
            }
        }
    }
}

mod accept {
    use super::*;

    /// What a generated media range is, for the model of the documented rule.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Category {
        /// `text/html` in any case.
        Html,
        /// `text/*`.
        TextAny,
        /// `*/*`.
        Any,
        /// `application/xhtml+xml`: counts as HTML, never competes with it.
        Xhtml,
        /// Any other `type/subtype` (`application/json`, `image/*`, `*/html`…).
        Other,
        /// Not a media range (no `/`): ignored.
        Invalid,
    }

    /// One media range of a generated `Accept` header.
    #[derive(Clone, Debug)]
    struct Range {
        text: String,
        category: Category,
        /// q in thousandths; `None` for an invalid q (the whole range is then ignored).
        q: Option<u16>,
    }

    fn media_type() -> impl Strategy<Value = (String, Category)> {
        prop_oneof![
            select(vec!["text/html", "TEXT/HTML", "Text/Html"])
                .prop_map(|t| (t.to_owned(), Category::Html)),
            select(vec!["text/*", "TEXT/*"]).prop_map(|t| (t.to_owned(), Category::TextAny)),
            Just(("*/*".to_owned(), Category::Any)),
            select(vec!["application/xhtml+xml", "APPLICATION/XHTML+XML"])
                .prop_map(|t| (t.to_owned(), Category::Xhtml)),
            select(vec![
                "application/json",
                "image/*",
                "image/webp",
                "*/html",
                "text/plain",
                "application/*",
                "text/htmlx",
                "x/y"
            ])
            .prop_map(|t| (t.to_owned(), Category::Other)),
            select(vec!["html", "", "text"]).prop_map(|t| (t.to_owned(), Category::Invalid)),
        ]
    }

    /// A q parameter: none (q = 1), valid forms, and invalid ones.
    fn q_param() -> impl Strategy<Value = (String, Option<u16>)> {
        prop_oneof![
            2 => Just((String::new(), Some(1000))),
            3 => (0u16..=1000).prop_map(|q| {
                let text = if q == 1000 { "1.000".to_owned() } else { format!("0.{q:03}") };
                (format!(";q={text}"), Some(q))
            }),
            1 => select(vec![
                (";q=1", Some(1000)), (";Q=1.0", Some(1000)), ("; q = 0.5", Some(500)), (";q=0", Some(0)),
                (";q=0.", Some(0)), (";q=1.", Some(1000)), (";q=0.9", Some(900)), (";q=0.05", Some(50)),
                (";q=2", None), (";q=1.5", None), (";q=-1", None), (";q=0.1234", None), (";q=abc", None),
                (";q=", None), (";q=1.001", None),
            ])
            .prop_map(|(t, q)| (t.to_owned(), q)),
        ]
    }

    fn range() -> impl Strategy<Value = Range> {
        (
            media_type(),
            select(vec!["", ";level=1", ";charset=utf-8", "; a=b"]),
            q_param(),
            select(vec!["", " ", "  "]),
        )
            .prop_map(|((mime, category), param, (q_text, q), pad)| Range {
                text: format!("{pad}{mime}{param}{q_text}{pad}"),
                category,
                q,
            })
    }

    /// The documented rule (`is_browser_navigation`): HTML is preferred when `text/html`
    /// (else `text/*`), by its first occurrence, has q > 0 and a q at least as high as every
    /// concrete non-HTML type; `*/*` alone is not enough; a range with an invalid q is ignored.
    fn model(ranges: &[Range]) -> bool {
        let valid = || ranges.iter().filter_map(|r| r.q.map(|q| (r.category, q)));
        let html = valid()
            .find(|(c, _)| *c == Category::Html)
            .or_else(|| valid().find(|(c, _)| *c == Category::TextAny))
            .map(|(_, q)| q);
        let best_other = valid()
            .filter(|(c, _)| *c == Category::Other)
            .map(|(_, q)| q)
            .max()
            .unwrap_or(0);
        html.is_some_and(|q| q > 0 && q >= best_other)
    }

    /// `ranges` as `Accept` headers: split at `cuts` into several header fields.
    fn headers(ranges: &[Range], cuts: &[bool]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut current: Vec<&str> = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            current.push(&r.text);
            if cuts.get(i).copied().unwrap_or(false) || i + 1 == ranges.len() {
                headers.append(
                    header::ACCEPT,
                    HeaderValue::from_str(&current.join(",")).unwrap(),
                );
                current.clear();
            }
        }
        headers
    }

    fn accept_header() -> impl Strategy<Value = (Vec<Range>, Vec<bool>)> {
        (
            prop::collection::vec(range(), 0..7),
            prop::collection::vec(prop::bool::weighted(0.2), 7),
        )
    }

    fn range_of(text: &str, category: Category, q: u16) -> Range {
        Range {
            text: text.to_owned(),
            category,
            q: Some(q),
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn accept_parsing_never_panics(
            values in prop::collection::vec(prop_oneof![
                prop::collection::vec(any::<u8>(), 0..100),
                "[ -~]{0,60}".prop_map(String::into_bytes),
                "((text|\\*|application)/(html|\\*|json)(;q=[0-9.]{0,6})?,?){0,6}".prop_map(String::into_bytes),
            ], 0..4),
            method in select(vec![Method::GET, Method::HEAD, Method::POST, Method::OPTIONS]),
        ) {
            let mut headers = HeaderMap::new();
            for bytes in &values {
                if let Some(value) = header_value(bytes) {
                    headers.append(header::ACCEPT, value);
                }
            }
            let _ = dispatch::accept_prefers_html(&headers);
            let _ = dispatch::is_browser_navigation(&method, &headers);
        }

        #[test]
        fn accept_follows_the_documented_rule((ranges, cuts) in accept_header()) {
            let headers = headers(&ranges, &cuts);
            prop_assert_eq!(dispatch::accept_prefers_html(&headers), model(&ranges), "{:?}", headers);
        }

        /// Ties go to HTML and the first `text/html` is the one that counts: putting
        /// `text/html` (q = 1) first always makes a request prefer HTML.
        #[test]
        fn text_html_first_always_prefers_html(
            (ranges, cuts) in accept_header(),
            first in select(vec!["text/html", "text/html;q=1", "TEXT/HTML;Q=1.000", " text/html ; level=1"]),
        ) {
            let mut all = vec![range_of(first, Category::Html, 1000)];
            all.extend(ranges);
            let mut all_cuts = vec![false];
            all_cuts.extend(cuts);
            prop_assert!(dispatch::accept_prefers_html(&headers(&all, &all_cuts)));
        }

        /// Adding `*/*` (any q) or a non-HTML type with q = 0 never changes the answer; adding
        /// a non-HTML type with q = 1 when HTML's q is below 1 makes it an API client; removing
        /// every non-HTML type never turns a browser into an API client.
        #[test]
        fn accept_is_monotonic(
            (ranges, cuts) in accept_header(),
            any_q in 0u16..=1000,
            at in any::<prop::sample::Index>(),
        ) {
            let before = dispatch::accept_prefers_html(&headers(&ranges, &cuts));
            let inserted = |extra: Range| {
                let mut all = ranges.clone();
                all.insert(at.index(ranges.len() + 1), extra);
                dispatch::accept_prefers_html(&headers(&all, &cuts))
            };
            prop_assert_eq!(inserted(range_of(&format!("*/*;q=0.{:03}", any_q.min(999)), Category::Any, any_q.min(999))), before);
            prop_assert_eq!(inserted(range_of("application/json;q=0", Category::Other, 0)), before);
            let html_below_one = ranges
                .iter()
                .filter(|r| r.q.is_some())
                .find(|r| r.category == Category::Html)
                .or_else(|| ranges.iter().filter(|r| r.q.is_some()).find(|r| r.category == Category::TextAny))
                .is_none_or(|r| r.q < Some(1000));
            if html_below_one {
                prop_assert!(!inserted(range_of("application/json", Category::Other, 1000)));
            }
            let html_only: Vec<Range> = ranges.iter().filter(|r| r.category != Category::Other).cloned().collect();
            if before {
                prop_assert!(dispatch::accept_prefers_html(&headers(&html_only, &cuts)));
            }
        }

        /// Only a GET or HEAD that prefers HTML, is not an XHR and, when the browser says how
        /// it fetches, says `navigate`, is a browser navigation.
        #[test]
        fn browser_navigation_needs_all_its_conditions(
            (ranges, cuts) in accept_header(),
            method in select(vec![Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS]),
            xhr in prop::option::of(select(vec!["XMLHttpRequest", "xmlhttprequest", "fetch"])),
            mode in prop::option::of(select(vec!["navigate", "NAVIGATE", "nested-navigate", "cors", "no-cors", "same-origin", "websocket"])),
        ) {
            let mut headers = headers(&ranges, &cuts);
            if let Some(x) = xhr {
                headers.insert("x-requested-with", HeaderValue::from_static(x));
            }
            if let Some(m) = mode {
                headers.insert("sec-fetch-mode", HeaderValue::from_static(m));
            }
            let expected = (method == Method::GET || method == Method::HEAD)
                && !xhr.is_some_and(|x| x.eq_ignore_ascii_case("XMLHttpRequest"))
                && mode.is_none_or(|m| m.eq_ignore_ascii_case("navigate") || m == "nested-navigate")
                && model(&ranges);
            prop_assert_eq!(dispatch::is_browser_navigation(&method, &headers), expected);
        }
    }
}
