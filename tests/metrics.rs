//! Prometheus metrics of the real binary (`[metrics] listen`), over real sockets: a whole login
//! through the simulator, a failed callback, proxied requests, pushes (the simulator's ticket and
//! a forged one), a logout and a forward-auth request, then one scrape of `GET /metrics` checked
//! series by series — by name and labels — and for the absence of anything about a person or a
//! request (openid, path, client IP). The metrics are served only on their own listener.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use support::bounded;
use support::sidecar::{Sidecar, free_port, repo_file};

/// Tenant A of the shipped development configuration (served on `127.0.0.1`).
const TENANT_A: &str = "wxa1b2c3d4e5f60708";

/// The sum of the samples of `name` whose labels include every `labels` pair (`k="v"`), or
/// `None` when no such series is in the scrape.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let wanted = labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|l| l == format!("{k}=\"{v}\""))
        });
        if wanted {
            *found.get_or_insert(0.0) += value.parse::<f64>().expect("a number");
        }
    }
    found
}

fn must(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{scrape}"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn scrape(client: &reqwest::Client, port: u16) -> String {
    let response = bounded(
        client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send(),
    )
    .await
    .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    bounded(response.text()).await.unwrap()
}

#[tokio::test]
async fn the_whole_login_funnel_and_the_proxy_are_scraped_by_name() {
    let metrics_port = free_port();
    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let config = format!(
        "{shipped}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\ntenant_label = true\n"
    );
    let sidecar = Sidecar::start("metrics", &config).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // A whole login, then a proxied request with the session.
    let browser = sidecar.browser();
    let landing = sidecar.login(&browser, "/orders/42?secret-path=1", 0).await;
    assert_eq!(landing.status, StatusCode::OK);
    let who = browser
        .get_with(
            sidecar.url("/_wxauth/whoami"),
            &[("accept", "application/json")],
        )
        .await;
    let openid = who.json()["openid"].as_str().unwrap().to_owned();
    assert!(openid.len() > 10, "{openid}");
    let page = browser.get(sidecar.url("/orders/7")).await;
    assert_eq!(page.status, StatusCode::OK);

    // A callback with a state nobody issued, and an API request without a session.
    let stranger = browser.fresh();
    let failed = stranger
        .get(sidecar.url("/_wxauth/callback?code=any-code&state=notastateweissued"))
        .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    let api = stranger.get(sidecar.url("/api/orders")).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // A forged push (the simulator's genuine ticket push arrived before the sidecar was ready).
    let forged = bounded(
        client
            .post(
                sidecar
                    .url("/_wxauth/events?timestamp=1&nonce=2&msg_signature=0000&encrypt_type=aes"),
            )
            .body(
                "<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId>\
                 <Encrypt><![CDATA[AAAA]]></Encrypt></xml>",
            )
            .send(),
    )
    .await
    .unwrap();
    assert!(forged.status().is_client_error(), "{}", forged.status());

    // Forward auth is off in this configuration: 404, counted as forbidden.
    let asked = stranger.get(sidecar.url("/_wxauth/auth/request")).await;
    assert_eq!(asked.status, StatusCode::NOT_FOUND);

    // A logout ends the session.
    let out = browser
        .send(Method::POST, sidecar.url("/_wxauth/logout"), &[], None)
        .await;
    assert!(out.status.is_redirection(), "{}", out.status);

    let text = scrape(&client, metrics_port).await;
    let tenant = ("tenant", TENANT_A);

    // The login funnel.
    assert_eq!(must(&text, "wxauth_logins_started_total", &[tenant]), 1.0);
    assert_eq!(
        must(
            &text,
            "wxauth_login_callbacks_total",
            &[("result", "ok"), tenant]
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "wxauth_login_callbacks_total",
            &[("result", "invalid_state")]
        ),
        1.0
    );
    assert_eq!(
        must(&text, "wxauth_login_duration_seconds_count", &[tenant]),
        1.0
    );
    assert!(
        text.contains("wxauth_login_duration_seconds_bucket{"),
        "a histogram, not a summary"
    );
    assert_eq!(must(&text, "wxauth_sessions_created_total", &[tenant]), 1.0);
    assert_eq!(
        must(
            &text,
            "wxauth_sessions_ended_total",
            &[("reason", "logout")]
        ),
        1.0
    );
    assert!(sample(&text, "wxauth_sessions_active", &[]).is_some());

    // WeChat: the component token, the code exchange and the profile, each answered.
    for endpoint in ["component_token", "code_exchange", "userinfo"] {
        let ok = must(
            &text,
            "wxauth_wechat_api_requests_total",
            &[("endpoint", endpoint), ("class", "ok")],
        );
        assert!(ok >= 1.0, "{endpoint}: {ok}");
        assert!(
            must(
                &text,
                "wxauth_wechat_api_duration_seconds_count",
                &[("endpoint", endpoint)]
            ) >= 1.0
        );
    }
    assert!(
        must(
            &text,
            "wxauth_component_token_refreshes_total",
            &[("result", "ok")]
        ) >= 1.0
    );
    let expiry = must(
        &text,
        "wxauth_component_token_expiry_timestamp_seconds",
        &[],
    );
    assert!(expiry > now() + 600.0, "{expiry}");

    // Pushes: the simulator's ticket accepted, the forged one refused for its signature.
    assert!(
        must(
            &text,
            "wxauth_pushes_total",
            &[("kind", "component_verify_ticket"), ("result", "accepted")]
        ) >= 1.0
    );
    assert_eq!(
        must(&text, "wxauth_pushes_total", &[("result", "bad_signature")]),
        1.0
    );
    let ticket = must(&text, "wxauth_ticket_last_accepted_timestamp_seconds", &[]);
    assert!(ticket <= now() && ticket > now() - 600.0, "{ticket}");

    // Tenants: both accounts of the shipped configuration are servable.
    let servable = must(&text, "wxauth_tenants", &[("status", "configured")])
        + must(&text, "wxauth_tenants", &[("status", "active")]);
    assert_eq!(servable, 2.0);
    assert_eq!(must(&text, "wxauth_tenants", &[("status", "revoked")]), 0.0);

    // Requests through the layer.
    assert!(
        must(
            &text,
            "wxauth_requests_total",
            &[("outcome", "forwarded"), ("status_class", "2xx")]
        ) >= 1.0
    );
    assert_eq!(
        must(
            &text,
            "wxauth_requests_total",
            &[("outcome", "login_redirect"), ("status_class", "3xx")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "wxauth_requests_total",
            &[("outcome", "unauthenticated"), ("status_class", "4xx")]
        ),
        1.0
    );
    assert!(must(&text, "wxauth_requests_total", &[("outcome", "reserved")]) >= 5.0);
    assert!(
        must(
            &text,
            "wxauth_request_duration_seconds_count",
            &[("outcome", "forwarded")]
        ) >= 1.0
    );
    assert_eq!(
        must(
            &text,
            "wxauth_forward_auth_total",
            &[("result", "forbidden")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &text,
            "wxauth_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Nothing about a person or a request.
    for needle in [
        openid.as_str(),
        "/orders",
        "secret-path",
        "127.0.0.1",
        "any-code",
    ] {
        assert!(!text.contains(needle), "{needle} in the scrape:\n{text}");
    }

    // The metrics listener serves /metrics only.
    let other = bounded(
        client
            .get(format!("http://127.0.0.1:{metrics_port}/_wxauth/health"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // On the public listener, /metrics is an ordinary protected path of the upstream (here: 401
    // without a session), never our exporter.
    let public = bounded(client.get(sidecar.url("/metrics")).send())
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::UNAUTHORIZED);
    let body = bounded(public.text()).await.unwrap();
    assert!(
        !body.contains("wxauth_") && !body.contains("# TYPE"),
        "{body}"
    );
}

#[tokio::test]
async fn the_tenant_label_is_refused_in_dynamic_mode() {
    use std::collections::HashMap;
    use wechat_oauth_proxy::config::Config;
    let shipped = std::fs::read_to_string(repo_file("config.toml")).unwrap();
    let dynamic = shipped.replace("mode = \"static\"", "mode = \"dynamic\"")
        + "\n[metrics]\nlisten = \"127.0.0.1:9464\"\ntenant_label = true\n";
    let err = Config::from_toml_str(&dynamic, std::path::Path::new("."), &HashMap::new())
        .expect_err("refused");
    assert!(err.to_string().contains("metrics.tenant_label"), "{err}");
    // Without the label, the same file is fine.
    let plain = dynamic.replace("tenant_label = true", "tenant_label = false");
    Config::from_toml_str(&plain, std::path::Path::new("."), &HashMap::new()).expect("valid");
}

/// Every series the dashboard and the alert rules query is one the crate exports.
#[test]
fn the_dashboard_and_the_alerts_query_only_exported_series() {
    use wechat_oauth_proxy::metrics::names as n;
    let exported = [
        n::BUILD_INFO,
        n::LOGINS_STARTED,
        n::LOGIN_CALLBACKS,
        n::LOGIN_DURATION,
        n::WECHAT_REQUESTS,
        n::WECHAT_DURATION,
        n::TOKEN_REFRESHES,
        n::TOKEN_EXPIRY,
        n::PUSHES,
        n::TICKET_LAST_ACCEPTED,
        n::TENANTS,
        n::SESSIONS_CREATED,
        n::SESSIONS_ENDED,
        n::SESSIONS_ACTIVE,
        n::REQUESTS,
        n::REQUEST_DURATION,
        n::FORWARD_AUTH,
    ];
    let dashboard =
        std::fs::read_to_string(repo_file("deploy/grafana/wechat-oauth-proxy.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let alerts = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let mut seen = 0;
    for text in [&dashboard, &alerts] {
        for (at, _) in text.match_indices("wxauth_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(exported.contains(&base), "{name} is not exported");
            seen += 1;
        }
    }
    assert!(seen > 20, "{seen}");
}

/// The alert rules are valid and fire as intended (`promtool`, from Debian's `prometheus`).
#[tokio::test]
async fn the_alert_rules_pass_promtool() {
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let mut command = tokio::process::Command::new("promtool");
        command.args(args).current_dir(repo_file(""));
        let ran = support::sidecar::run(
            command,
            "",
            Duration::from_secs(60),
            "install Debian's prometheus package (scripts/test.sh does)",
        )
        .await;
        assert_eq!(
            ran.code,
            Some(0),
            "promtool {args:?}: {}{}",
            ran.stdout,
            ran.stderr
        );
    }
}
