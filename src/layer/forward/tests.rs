//! The metadata rules of `forward`, one protocol at a time, on hand-made requests.

use http::{Method, Request, request::Parts, uri::Scheme};

use super::*;

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn prefix() -> Prefix {
    Prefix::default()
}

/// (method, scheme, host, decoded path, return path) of what `kind` reads from `parts`.
fn read(
    kind: ForwardAuthKind,
    parts: &Parts,
) -> Result<(Method, Option<Scheme>, String, String, String), ForwardError> {
    parse(kind, parts, &prefix()).map(|o| {
        (
            o.method().clone(),
            o.scheme().cloned(),
            o.authority().as_str().to_owned(),
            o.decoded_path().to_owned(),
            o.return_path().as_str().to_owned(),
        )
    })
}

const FORWARDED: [(&str, &str); 4] = [
    ("x-forwarded-method", "POST"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "app.example.com"),
    ("x-forwarded-uri", "/orders/42?x=1"),
];

/// `FORWARDED` with `name` replaced by `value` (`None`: removed), plus `extra`.
fn forwarded_with(name: &str, value: Option<&str>, extra: &[(&str, &str)]) -> Parts {
    let mut headers: Vec<(&str, &str)> = FORWARDED
        .iter()
        .filter(|(n, _)| *n != name)
        .copied()
        .collect();
    if let Some(value) = value {
        headers.push((name, value));
    }
    headers.extend_from_slice(extra);
    parts("GET", "/_wxauth/auth/forward", &headers)
}

#[test]
fn forwarded_reads_the_four_headers() {
    let original = read(ForwardAuthKind::Forward, &forwarded_with("", None, &[])).expect("valid");
    assert_eq!(
        original,
        (
            Method::POST,
            Some(Scheme::HTTPS),
            "app.example.com".to_owned(),
            "/orders/42".to_owned(),
            "/orders/42?x=1".to_owned(),
        )
    );
    // Normalized with the layer's own rule; the return path is the canonical form.
    let dotted = forwarded_with("x-forwarded-uri", Some("/public/../private/%7Ex?q"), &[]);
    let (_, _, _, path, back) = read(ForwardAuthKind::Forward, &dotted).expect("valid");
    assert_eq!(
        (path.as_str(), back.as_str()),
        ("/private/~x", "/private/~x?q")
    );
    // Never read: X-Forwarded-Prefix, -Port, -Server, Forwarded.
    let noisy = forwarded_with(
        "",
        None,
        &[
            ("x-forwarded-prefix", "/public"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-server", "evil"),
            ("forwarded", "host=evil.example;proto=http"),
        ],
    );
    assert_eq!(
        read(ForwardAuthKind::Forward, &noisy).expect("valid").3,
        "/orders/42"
    );
}

#[test]
fn forwarded_refuses_anything_malformed() {
    use ForwardError as E;
    let cases: Vec<(Parts, ForwardError)> = vec![
        (
            forwarded_with("x-forwarded-uri", None, &[]),
            E::Missing("x-forwarded-uri"),
        ),
        (
            forwarded_with("x-forwarded-method", None, &[]),
            E::Missing("x-forwarded-method"),
        ),
        (
            forwarded_with("x-forwarded-proto", None, &[]),
            E::Missing("x-forwarded-proto"),
        ),
        (
            forwarded_with("x-forwarded-host", None, &[]),
            E::Missing("x-forwarded-host"),
        ),
        (
            forwarded_with("", None, &[("x-forwarded-uri", "/other")]),
            E::Duplicated("x-forwarded-uri"),
        ),
        (
            forwarded_with("", None, &[("x_forwarded_uri", "/public")]),
            E::Alias("x-forwarded-uri"),
        ),
        (
            forwarded_with("", None, &[("x.forwarded.host", "evil.example")]),
            E::Alias("x-forwarded-host"),
        ),
        (
            forwarded_with("", None, &[("x-forwarded_method", "GET")]),
            E::Alias("x-forwarded-method"),
        ),
        (
            forwarded_with("x-forwarded-uri", Some(""), &[]),
            E::NotText("x-forwarded-uri"),
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/a\tb"), &[]),
            E::NotText("x-forwarded-uri"),
        ),
        (
            forwarded_with("x-forwarded-method", Some("get"), &[]),
            E::Method,
        ),
        (
            forwarded_with("x-forwarded-method", Some("CONNECT"), &[]),
            E::Method,
        ),
        (
            forwarded_with("x-forwarded-method", Some("GET POST"), &[]),
            E::Method,
        ),
        (
            forwarded_with("x-forwarded-method", Some("ABCDEFGHIJKLMNOPQ"), &[]),
            E::Method,
        ),
        (
            forwarded_with("x-forwarded-proto", Some("ftp"), &[]),
            E::Scheme,
        ),
        (
            forwarded_with("x-forwarded-proto", Some("https, http"), &[]),
            E::Scheme,
        ),
        (
            forwarded_with("x-forwarded-host", Some("user@app.example.com"), &[]),
            E::Host,
        ),
        (
            forwarded_with("x-forwarded-host", Some("app.example.com:99999"), &[]),
            E::Host,
        ),
        (
            forwarded_with("x-forwarded-host", Some("app.example.com:x"), &[]),
            E::Host,
        ),
        (
            forwarded_with("x-forwarded-host", Some("a/b"), &[]),
            E::Host,
        ),
        (
            forwarded_with("x-forwarded-uri", Some("orders/42"), &[]),
            E::Target,
        ),
        (
            forwarded_with("x-forwarded-uri", Some("https://evil.example/"), &[]),
            E::Target,
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/a#b"), &[]),
            E::Target,
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/a b"), &[]),
            E::Target,
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/public%2F..%2Fprivate"), &[]),
            E::Path(PathError::Separator),
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/public/..;/private"), &[]),
            E::Path(PathError::DotParameters),
        ),
        (
            forwarded_with("x-forwarded-uri", Some("/a%00"), &[]),
            E::Path(PathError::Control),
        ),
    ];
    for (parts, expected) in cases {
        assert_eq!(
            read(ForwardAuthKind::Forward, &parts),
            Err(expected),
            "{:?}",
            parts.headers
        );
    }
    let long = format!("/{}", "a".repeat(metadata::MAX_TARGET_LEN));
    assert_eq!(
        read(
            ForwardAuthKind::Forward,
            &forwarded_with("x-forwarded-uri", Some(&long), &[])
        ),
        Err(E::Target)
    );
    // Non-ASCII bytes in a value.
    let mut parts = forwarded_with("x-forwarded-uri", None, &[]);
    parts.headers.insert(
        "x-forwarded-uri",
        http::HeaderValue::from_bytes(b"/\xe4\xb8\xad").expect("obs-text value"),
    );
    assert_eq!(
        read(ForwardAuthKind::Forward, &parts),
        Err(E::NotText("x-forwarded-uri"))
    );
}

#[test]
fn nginx_reads_the_original_url_or_uri_and_host() {
    let url = parts(
        "GET",
        "/_wxauth/auth/request",
        &[
            ("x-original-method", "GET"),
            ("x-original-url", "https://App.example.com:8443/a/./b?c=d"),
            ("host", "127.0.0.1:8080"),
        ],
    );
    assert_eq!(
        read(ForwardAuthKind::Request, &url).expect("valid"),
        (
            Method::GET,
            Some(Scheme::HTTPS),
            "App.example.com:8443".to_owned(),
            "/a/b".to_owned(),
            "/a/b?c=d".to_owned(),
        )
    );
    let uri = parts(
        "GET",
        "/_wxauth/auth/request",
        &[
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/x?y"),
            ("host", "app.example.com"),
        ],
    );
    assert_eq!(
        read(ForwardAuthKind::Request, &uri).expect("valid"),
        (
            Method::DELETE,
            None,
            "app.example.com".to_owned(),
            "/x".to_owned(),
            "/x?y".to_owned(),
        )
    );
    // Both, agreeing (ingress-nginx sends both).
    let both = parts(
        "GET",
        "/_wxauth/auth/request",
        &[
            ("x-original-method", "GET"),
            ("x-original-url", "http://app.example.com/x?y"),
            ("x-original-uri", "/x?y"),
        ],
    );
    assert!(read(ForwardAuthKind::Request, &both).is_ok());
}

#[test]
fn nginx_refuses_anything_malformed() {
    use ForwardError as E;
    let with = |headers: &[(&str, &str)]| parts("GET", "/_wxauth/auth/request", headers);
    let cases = [
        (
            with(&[("x-original-url", "http://a.example/")]),
            E::Missing("x-original-method"),
        ),
        (
            with(&[("x-original-method", "GET")]),
            E::Missing("x-original-url"),
        ),
        (
            with(&[("x-original-method", "GET"), ("x-original-uri", "/x")]),
            E::Missing("host"),
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example/x"),
                ("x-original-uri", "/public"),
            ]),
            E::Conflict("x-original-uri"),
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "/relative"),
            ]),
            E::Url,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "ftp://a.example/x"),
            ]),
            E::Scheme,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "javascript://a.example/x"),
            ]),
            E::Scheme,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://u:p@a.example/x"),
            ]),
            E::Host,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example?x=/y"),
            ]),
            E::Url,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example/x#/y"),
            ]),
            E::Url,
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example/a/..%2f..%2fb"),
            ]),
            E::Path(PathError::Separator),
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example/x"),
                ("x-original-url", "http://a.example/y"),
            ]),
            E::Duplicated("x-original-url"),
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-url", "http://a.example/x"),
                ("x_original_url", "http://a.example/public"),
            ]),
            E::Alias("x-original-url"),
        ),
        (
            with(&[
                ("x-original-method", "GET"),
                ("x-original-uri", "/x"),
                ("host", "a.example"),
                ("host", "b.example"),
            ]),
            E::Duplicated("host"),
        ),
    ];
    for (parts, expected) in cases {
        assert_eq!(
            read(ForwardAuthKind::Request, &parts),
            Err(expected),
            "{:?}",
            parts.headers
        );
    }
}

#[test]
fn envoy_reads_the_request_line_after_the_prefix() {
    let check = parts(
        "PUT",
        "/_wxauth/auth/envoy/orders/42?x=1",
        &[("host", "app.example.com"), ("x-forwarded-proto", "https")],
    );
    assert_eq!(
        read(ForwardAuthKind::Envoy, &check).expect("valid"),
        (
            Method::PUT,
            Some(Scheme::HTTPS),
            "app.example.com".to_owned(),
            "/orders/42".to_owned(),
            "/orders/42?x=1".to_owned(),
        )
    );
    let root = parts("GET", "/_wxauth/auth/envoy/", &[("host", "a.example")]);
    let (_, scheme, _, path, _) = read(ForwardAuthKind::Envoy, &root).expect("valid");
    assert_eq!((scheme, path.as_str()), (None, "/"));
    let v6 = parts("GET", "/_wxauth/auth/envoy/x", &[("host", "[::1]:8080")]);
    assert_eq!(
        read(ForwardAuthKind::Envoy, &v6).expect("valid").2,
        "[::1]:8080"
    );
    // HTTP/2: the authority of the request line.
    let h2 = parts("GET", "http://a.example/_wxauth/auth/envoy/x", &[]);
    assert_eq!(
        read(ForwardAuthKind::Envoy, &h2).expect("valid").2,
        "a.example"
    );
    // A longer prefix.
    let deep = Prefix::parse("/a/b").expect("prefix");
    let check = parts("GET", "/a/b/auth/envoy/c/d", &[("host", "a.example")]);
    let original = parse(ForwardAuthKind::Envoy, &check, &deep).expect("valid");
    assert_eq!(original.decoded_path(), "/c/d");
}

#[test]
fn envoy_refuses_anything_malformed() {
    use ForwardError as E;
    let cases = [
        (
            parts("GET", "/_wxauth/auth/envoy/x", &[]),
            E::Missing("host"),
        ),
        (
            parts("GET", "/_wxauth/auth/envoy", &[("host", "a.example")]),
            E::Missing("the original path"),
        ),
        (
            parts(
                "GET",
                "http://b.example/_wxauth/auth/envoy/x",
                &[("host", "a.example")],
            ),
            E::Conflict("host"),
        ),
        (
            parts(
                "GET",
                "/_wxauth/auth/envoy/x",
                &[("host", "a.example"), ("x-forwarded-proto", "gopher")],
            ),
            E::Scheme,
        ),
        (
            parts(
                "GET",
                "/_wxauth/auth/envoy/x",
                &[("host", "a.example"), ("x_forwarded_proto", "https")],
            ),
            E::Alias("x-forwarded-proto"),
        ),
        (
            parts("get", "/_wxauth/auth/envoy/x", &[("host", "a.example")]),
            E::Method,
        ),
        (
            parts("GET", "/_wxauth/auth/envoy/x", &[("host", "a b")]),
            E::Host,
        ),
    ];
    for (parts, expected) in cases {
        assert_eq!(
            read(ForwardAuthKind::Envoy, &parts),
            Err(expected),
            "{parts:?}"
        );
    }
}

#[test]
fn an_envoy_check_path_may_not_leave_its_prefix() {
    let p = prefix();
    let escapes = |raw: &str| {
        let normalized = normalize_path_for_test(raw);
        escapes_envoy_prefix(raw, &normalized, &p)
    };
    assert!(escapes("/_wxauth/auth/envoy/../../../private"));
    assert!(escapes("/_wxauth/auth/envoy/../request"));
    assert!(escapes("/_wxauth/auth/envoy/%2e%2e/x"));
    assert!(!escapes("/_wxauth/auth/envoy/a/../b"));
    assert!(!escapes("/_wxauth/auth/envoy//x"));
    assert!(!escapes("/_wxauth/auth/envoyx/../y"));
    assert!(!escapes("/other/../_wxauth/auth/envoy/x"));
}

fn normalize_path_for_test(raw: &str) -> String {
    crate::layer::dispatch::normalize_path(raw)
        .expect("normalizes")
        .decoded()
        .to_owned()
}

#[test]
fn settings_refuse_trust_in_everyone() {
    let mut settings = ForwardAuthSettings::default();
    assert_eq!(settings.problem(), None, "off: nothing to check");
    settings.enabled = true;
    assert_eq!(settings.problem(), None);
    assert!(settings.allows(Some("127.0.0.1".parse().expect("ip"))));
    assert!(settings.allows(Some("127.8.9.10".parse().expect("ip"))));
    assert!(settings.allows(Some("::1".parse().expect("ip"))));
    assert!(settings.allows(Some("::ffff:127.0.0.1".parse().expect("ip"))));
    assert!(!settings.allows(Some("10.0.0.1".parse().expect("ip"))));
    assert!(!settings.allows(None));
    settings.allowed_callers = vec!["0.0.0.0/0".parse().expect("net")];
    assert!(settings.problem().is_some());
    settings.allowed_callers = vec![];
    assert!(settings.problem().is_some());
}

#[test]
fn the_three_endpoints_are_reserved_routes() {
    use crate::layer::dispatch::{Decision, DispatchSettings, Route, dispatch};
    let settings = DispatchSettings::default();
    let route = |path: &str| {
        let uri: http::Uri = path.parse().expect("uri");
        dispatch(&Method::GET, &uri, &http::HeaderMap::new(), true, &settings)
    };
    for (path, kind) in [
        ("/_wxauth/auth/request", Some(ForwardAuthKind::Request)),
        ("/_wxauth/auth/forward", Some(ForwardAuthKind::Forward)),
        ("/_wxauth/auth/envoy", Some(ForwardAuthKind::Envoy)),
        ("/_wxauth/auth/envoy/", Some(ForwardAuthKind::Envoy)),
        ("/_wxauth/auth/envoy/a/b?c", Some(ForwardAuthKind::Envoy)),
        ("/_wxauth/auth/envoyx", None),
        ("/_wxauth/auth/request/x", None),
        ("/_wxauth/auth", None),
    ] {
        let expected = match kind {
            Some(kind) => Decision::Reserved(Route::ForwardAuth(kind)),
            None => Decision::Reserved(Route::NotFound),
        };
        assert_eq!(route(path), expected, "{path}");
    }
    assert_eq!(
        Route::ForwardAuth(ForwardAuthKind::Envoy).suffix(),
        Some("/auth/envoy")
    );
}

/// `X-Original-URL` is parsed once (its authority and target are not parsed again), yet gets
/// every check that `X-Original-URI` + `Host` gets: the same reading or the same refusal.
#[test]
fn nginx_url_gets_the_checks_of_uri_and_host() {
    use ForwardError as E;
    let long = format!("/{}", "a".repeat(super::metadata::MAX_TARGET_LEN));
    let cases: [(&str, &str, Result<(), E>); 8] = [
        ("app.example.com", "/a/./b?c=d", Ok(())),
        ("[::1]:8080", "/x", Ok(())),
        ("127.0.0.1:8443", "/x?y=%2F", Ok(())),
        ("a.example:99999", "/x", Err(E::Host)),
        ("a.example:8x", "/x", Err(E::Host)),
        (
            "a.example",
            "/a/..%2f..%2fb",
            Err(E::Path(PathError::Separator)),
        ),
        ("a.example", "/x%zz", Err(E::Path(PathError::BadEscape))),
        ("a.example", &long, Err(E::Target)),
    ];
    for (host, target, expected) in cases {
        let url = format!("http://{host}{target}");
        let by_url = read(
            ForwardAuthKind::Request,
            &parts(
                "GET",
                "/_wxauth/auth/request",
                &[("x-original-method", "GET"), ("x-original-url", &url)],
            ),
        );
        let by_uri = read(
            ForwardAuthKind::Request,
            &parts(
                "GET",
                "/_wxauth/auth/request",
                &[
                    ("x-original-method", "GET"),
                    ("x-original-uri", target),
                    ("host", host),
                ],
            ),
        );
        assert_eq!(by_url.clone().map(|_| ()), expected, "{url}");
        // The same reading but the scheme, which only the URL gives.
        assert_eq!(
            by_url.map(|(m, _, h, p, r)| (m, h, p, r)),
            by_uri.map(|(m, _, h, p, r)| (m, h, p, r)),
            "{url}"
        );
    }
}
