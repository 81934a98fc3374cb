//! Property-based fuzzing of path normalization and skip matching: the property that makes the
//! dot-segment bypass impossible is that **the skip decision and the forwarded path agree** —
//! whatever a backend does with the forwarded (canonical) path, it reads the path that was
//! classified.
//!
//! Paths are generated from pieces that matter (dot segments in every spelling, encoded
//! separators, `;`, backslashes, NUL, escapes of unreserved and reserved characters, UTF-8),
//! so most cases exercise the slow path. `PROPTEST_CASES` sets the number of cases (default
//! 4 096 here; see BENCHMARKS.md for the long run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{HeaderMap, Method, Uri};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use wechat_oauth_proxy::layer::{
    Decision, DispatchSettings, Prefix, SkipRule,
    dispatch::{dispatch, normalize_path},
};

const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "//",
    "public",
    "admin",
    "_wxauth",
    "x",
    "..",
    ".",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    ";",
    "..;",
    "%3b",
    "%3B",
    "%00",
    "%0a",
    "%41",
    "%7e",
    "~",
    "%20",
    "%2b",
    "+",
    "%e4%b8%ad",
    "%ff",
    "%",
    "%z",
    "a.b",
    "-",
    "_",
    "=",
    "@",
    ":",
];

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..14)
        .prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn settings() -> DispatchSettings {
    DispatchSettings {
        prefix: Prefix::default(),
        skip: vec![
            SkipRule::new(Some(Method::GET), "/public/*").unwrap(),
            SkipRule::new(None, "/x").unwrap(),
        ],
        api_prefixes: vec!["/admin".to_owned()],
        skip_preflight: false,
    }
}

/// Removes dot segments and empty segments the way a permissive backend would after decoding.
fn backend_view(decoded: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4096),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Normalization never panics; what it accepts is canonical, idempotent and decodes (with an
    /// independent decoder) to exactly the path that rules are matched against, with no dot or
    /// empty segment left for a backend to resolve differently.
    #[test]
    fn the_forwarded_path_decodes_to_the_classified_path(raw in raw_path()) {
        let Ok(path) = normalize_path(&raw) else { return Ok(()) };
        let canonical = path.canonical();
        prop_assert!(canonical.starts_with('/'));
        let again = normalize_path(canonical).expect("a canonical path normalizes");
        prop_assert_eq!(again.canonical(), canonical);
        prop_assert_eq!(again.decoded(), path.decoded());
        prop_assert!(again.into_rewrite().is_none(), "canonical form is stable: {}", canonical);
        let decoded = percent_decode_str(canonical).decode_utf8().expect("utf-8");
        prop_assert_eq!(decoded.as_ref(), path.decoded());
        let trimmed = decoded.trim_end_matches('/');
        prop_assert_eq!(backend_view(&decoded), if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() });
        // An independent URL parser (WHATWG, as browsers and many frameworks use) keeps it.
        let url = url::Url::parse(&format!("http://h{canonical}")).expect("url");
        prop_assert_eq!(url.path(), canonical);
    }

    /// The skip decision made on the raw request equals the one made on the forwarded path:
    /// a request is never judged public on one spelling and served as another.
    #[test]
    fn skip_decision_and_forwarded_path_agree(raw in raw_path()) {
        let Ok(uri) = raw.parse::<Uri>() else { return Ok(()) };
        let settings = settings();
        let headers = HeaderMap::new();
        let decision = dispatch(&Method::GET, &uri, &headers, true, &settings);
        match normalize_path(uri.path()) {
            Err(error) => prop_assert_eq!(decision, Decision::Refused(error)),
            Ok(path) => {
                let forwarded: Uri = path.canonical().parse().expect("canonical is a URI");
                let again = dispatch(&Method::GET, &forwarded, &headers, true, &settings);
                prop_assert_eq!(decision, again);
                // What a backend resolves from the forwarded path (decoded independently) is
                // judged the same way.
                let seen = percent_decode_str(path.canonical()).decode_utf8().expect("utf-8");
                let view: Uri = percent_encoding::utf8_percent_encode(
                    &backend_view(&seen),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string()
                .replace("%2F", "/")
                .parse()
                .expect("uri");
                let backend = dispatch(&Method::GET, &view, &headers, true, &settings);
                if decision == Decision::Skip {
                    prop_assert!(
                        backend == Decision::Skip,
                        "{} judged public but a backend reads {}", raw, view
                    );
                }
            }
        }
    }
}
