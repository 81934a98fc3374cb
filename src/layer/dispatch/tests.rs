//! The decision as a whole: [`dispatch`] over reserved routes, skip rules, preflights and
//! the browser-vs-API answer. Path normalization has its own tests in `path.rs`.

use http::{HeaderMap, HeaderValue, Method, Uri, header};

use super::*;

fn settings() -> DispatchSettings {
    DispatchSettings {
        prefix: Prefix::default(),
        skip: vec![
            SkipRule::new(Some(Method::GET), "/public/*").expect("rule"),
            SkipRule::new(None, "/healthz").expect("rule"),
        ],
        api_prefixes: vec!["/api".into()],
        skip_preflight: false,
    }
}

#[test]
fn cors_preflight_passes_only_when_enabled() {
    let mut preflight = HeaderMap::new();
    preflight.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static("POST"),
    );
    preflight.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://app.example.com"),
    );
    let uri: Uri = "/api/orders".parse().unwrap();
    let protected_api = Decision::Protected {
        client: ClientKind::Api,
    };

    // Off (the default): a preflight is an anonymous request like any other.
    let off = settings();
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &preflight, true, &off),
        protected_api
    );

    let on = DispatchSettings {
        skip_preflight: true,
        ..settings()
    };
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &preflight, true, &on),
        Decision::Skip
    );
    // Not a preflight: OPTIONS without Access-Control-Request-Method or Origin, with a
    // body, or another method.
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &HeaderMap::new(), true, &on),
        protected_api
    );
    let mut no_origin = preflight.clone();
    no_origin.remove(header::ORIGIN);
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &no_origin, true, &on),
        protected_api
    );
    for (name, value) in [
        (header::CONTENT_LENGTH, "12"),
        (header::TRANSFER_ENCODING, "chunked"),
    ] {
        let mut with_body = preflight.clone();
        with_body.insert(name, HeaderValue::from_static(value));
        assert_eq!(
            dispatch(&Method::OPTIONS, &uri, &with_body, true, &on),
            protected_api
        );
    }
    let mut empty_body = preflight.clone();
    empty_body.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &empty_body, true, &on),
        Decision::Skip
    );
    assert_eq!(
        dispatch(&Method::POST, &uri, &preflight, true, &on),
        protected_api
    );
    // An HTTP/2 preflight can carry DATA frames without content-length: a body on the
    // wire is never a preflight.
    assert_eq!(
        dispatch(&Method::OPTIONS, &uri, &preflight, false, &on),
        protected_api
    );
    // Reserved routes stay reserved; ambiguous paths stay protected.
    assert_eq!(
        dispatch(
            &Method::OPTIONS,
            &"/_wxauth/whoami".parse().unwrap(),
            &preflight,
            true,
            &on
        ),
        Decision::Reserved(Route::WhoAmI)
    );
    assert_eq!(
        dispatch(
            &Method::OPTIONS,
            &"/api/a%2Fb".parse().unwrap(),
            &preflight,
            true,
            &on
        ),
        Decision::Refused(PathError::Separator)
    );
}

fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT,
        HeaderValue::from_static(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        ),
    );
    h
}

fn decide(method: Method, uri: &str, headers: &HeaderMap) -> Decision {
    let uri: Uri = uri.parse().expect("uri");
    dispatch(&method, &uri, headers, true, &settings())
}

#[test]
fn skip_rules_match_normalized_paths_only() {
    let h = browser_headers();
    assert_eq!(decide(Method::GET, "/public/x.css", &h), Decision::Skip);
    assert_eq!(decide(Method::HEAD, "/public/x.css", &h), Decision::Skip);
    assert_eq!(decide(Method::GET, "/public", &h), Decision::Skip);
    assert_eq!(decide(Method::GET, "/public/a/../b", &h), Decision::Skip);
    for uri in [
        "/public%2F..%2Fprivate",
        "/public/..%2Fprivate",
        "/public/..;/private",
    ] {
        assert!(
            matches!(decide(Method::GET, uri, &h), Decision::Refused(_)),
            "{uri}"
        );
    }
    for uri in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2e/private",
        "/publicity",
        "/private?/public/x",
        "/private?x=/public/",
        "/private#/public/x",
    ] {
        assert!(
            matches!(decide(Method::GET, uri, &h), Decision::Protected { .. }),
            "{uri}"
        );
    }
    assert!(matches!(
        decide(Method::POST, "/public/x", &h),
        Decision::Protected {
            client: ClientKind::Api
        }
    ));
    assert_eq!(decide(Method::DELETE, "/healthz", &h), Decision::Skip);
}

#[test]
fn reserved_routes_are_exact_under_the_prefix() {
    let h = HeaderMap::new();
    assert_eq!(
        decide(Method::GET, "/_wxauth/login?return=/x", &h),
        Decision::Reserved(Route::Login)
    );
    assert_eq!(
        decide(Method::GET, "/_wxauth/callback", &h),
        Decision::Reserved(Route::Callback)
    );
    assert_eq!(
        decide(Method::POST, "/_wxauth/events", &h),
        Decision::Reserved(Route::Events)
    );
    assert_eq!(
        decide(Method::GET, "/_wxauth/jwks.json", &h),
        Decision::Reserved(Route::Jwks)
    );
    assert_eq!(
        decide(Method::GET, "/_wxauth/health", &h),
        Decision::Reserved(Route::Health)
    );
    assert_eq!(
        decide(Method::GET, "/_wxauth/nope", &h),
        Decision::Reserved(Route::NotFound)
    );
    assert_eq!(
        decide(Method::GET, "/_wxauth", &h),
        Decision::Reserved(Route::NotFound)
    );
    assert!(matches!(
        decide(Method::GET, "/_wxauthx/login", &h),
        Decision::Protected { .. }
    ));
    assert!(matches!(
        decide(Method::GET, "/_wxauth/../private", &h),
        Decision::Protected { .. }
    ));
    assert_eq!(
        decide(Method::GET, "/private/../_wxauth/whoami", &h),
        Decision::Reserved(Route::WhoAmI)
    );
    assert!(matches!(
        decide(Method::GET, "/_wxauth/..%2Fwhoami", &h),
        Decision::Refused(_)
    ));
}

#[test]
fn browser_vs_api() {
    let mut h = browser_headers();
    assert_eq!(
        decide(Method::GET, "/private", &h),
        Decision::Protected {
            client: ClientKind::Browser
        }
    );
    assert_eq!(
        decide(Method::POST, "/private", &h),
        Decision::Protected {
            client: ClientKind::Api
        }
    );
    assert_eq!(
        decide(Method::GET, "/api/things", &h),
        Decision::Protected {
            client: ClientKind::Api
        }
    );
    assert_eq!(
        decide(Method::GET, "/apidocs", &h),
        Decision::Protected {
            client: ClientKind::Browser
        }
    );
    h.insert(
        "x-requested-with",
        HeaderValue::from_static("XMLHttpRequest"),
    );
    assert_eq!(
        decide(Method::GET, "/private", &h),
        Decision::Protected {
            client: ClientKind::Api
        }
    );
}

fn accept(value: &'static str) -> bool {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT, HeaderValue::from_static(value));
    is_browser_navigation(&Method::GET, &h)
}

#[test]
fn accept_q_values() {
    assert!(accept("text/html"));
    assert!(accept("text/*"));
    assert!(accept("text/html;q=0.9, application/xhtml+xml"));
    assert!(accept("application/json;q=0.5, text/html"));
    assert!(!accept("application/json, text/html;q=0.9"));
    assert!(!accept("*/*"));
    assert!(!accept("application/json"));
    assert!(!accept("text/html;q=0"));
    assert!(!accept("text/html;q=2"));
    assert!(!accept(
        "text/html;q=0.5, */*;q=0.1, application/json;q=0.6"
    ));
    assert!(accept("TEXT/HTML; Q=1.0"));
    assert!(!is_browser_navigation(&Method::GET, &HeaderMap::new()));
}

#[test]
fn fetch_mode_overrides_accept() {
    let mut h = browser_headers();
    h.insert("sec-fetch-mode", HeaderValue::from_static("cors"));
    assert!(!is_browser_navigation(&Method::GET, &h));
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    assert!(is_browser_navigation(&Method::GET, &h));
}
