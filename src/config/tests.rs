//! The configuration tests: loading, defaults, every problem at once, secrets.

use super::*;

const AES: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn good() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:8080"
public_url = "https://auth.example.com"
upstream = "http://127.0.0.1:3000"

[wechat]
mode = "component"
appid = "wxa1b2c3d4e5f60708"
component_appid = "wx0123456789abcdef"
component_secret = "component-secret-value-1234"
message_token = "component_token_demo"
encoding_aes_key = "{AES}"

[session]
master_secret = "0123456789abcdef0123456789abcdef-master"
"#
    )
}

fn env() -> HashMap<String, String> {
    HashMap::new()
}

#[test]
fn good_config_loads() {
    let (cfg, secrets) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert_eq!(cfg.auth.prefix.as_str(), "/_wxauth");
    assert_eq!(cfg.jwt.header, "X-WeChat-Jwt");
    assert_eq!(cfg.wechat.login_deadline_ms, 10_000);
    assert_eq!(
        secrets.component_secret.unwrap().expose_secret(),
        "component-secret-value-1234"
    );
}

#[test]
fn upstream_section_is_optional_and_strict() {
    let (cfg, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert!(!cfg.upstream.allow_underscores_in_headers);
    let text = format!(
        "{}
[upstream]
allow_underscores_in_headers = true
",
        good()
    );
    let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    assert!(cfg.upstream.allow_underscores_in_headers);
    let text = format!(
        "{}
[upstream]
allow_underscore = true
",
        good()
    );
    assert!(Config::from_toml_str(&text, Path::new("."), &env()).is_err());
}

#[test]
fn upstream_pool_keys_default_to_the_library_pool_and_reach_the_proxy_settings() {
    let (cfg, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert_eq!(cfg.upstream.pool_max_idle, None);
    assert_eq!(cfg.upstream.pool_max_connections, 16_384);
    assert_eq!(cfg.upstream.pool_idle_timeout_secs, 90);
    let url = url::Url::parse("http://127.0.0.1:3000").unwrap();
    assert_eq!(
        cfg.proxy_settings(url.clone()).pool,
        crate::proxy::PoolSettings::default()
    );

    let text = format!(
        "{}
[upstream]
pool_max_idle = 4
pool_max_connections = 32
pool_idle_timeout_secs = 15
",
        good()
    );
    let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    assert_eq!(
        cfg.proxy_settings(url).pool,
        crate::proxy::PoolSettings {
            max_idle: 4,
            max_connections: 32,
            idle_timeout: std::time::Duration::from_secs(15),
        }
    );
}

#[test]
fn upstream_pool_keys_are_validated_at_their_keys() {
    let with = |keys: &str| format!("{}\n[upstream]\n{keys}\n", good());
    for accepted in [
        "pool_max_connections = 1",
        "pool_max_connections = 1\npool_max_idle = 1",
        "pool_max_connections = 8\npool_max_idle = 0",
        "pool_max_connections = 1048576",
        "pool_idle_timeout_secs = 1",
        "pool_idle_timeout_secs = 86400",
    ] {
        assert!(
            Config::from_toml_str(&with(accepted), Path::new("."), &env()).is_ok(),
            "{accepted:?} was refused"
        );
    }
    for (refused, key) in [
        ("pool_max_connections = 0", "upstream.pool_max_connections"),
        (
            "pool_max_connections = 1048577",
            "upstream.pool_max_connections",
        ),
        (
            "pool_max_connections = 8\npool_max_idle = 9",
            "upstream.pool_max_idle",
        ),
        (
            "pool_idle_timeout_secs = 0",
            "upstream.pool_idle_timeout_secs",
        ),
        (
            "pool_idle_timeout_secs = 86401",
            "upstream.pool_idle_timeout_secs",
        ),
        ("pool_max_connections = -1", "upstream.pool_max_connections"),
        ("pool_max_idle = \"many\"", "upstream.pool_max_idle"),
    ] {
        let keys = problem_keys(&with(refused));
        assert!(keys.contains(&key.to_owned()), "{refused:?}: {keys:?}");
    }
    // Unset, max_idle follows a lower max_connections instead of being refused.
    let (cfg, _) =
        Config::from_toml_str(&with("pool_max_connections = 16"), Path::new("."), &env()).unwrap();
    assert_eq!(cfg.upstream.pool_settings().max_idle, 16);
    assert_eq!(cfg.upstream.pool_settings().max_connections, 16);
    // Every problem at once, each at its key.
    let keys = problem_keys(&with(
        "pool_max_connections = 0\npool_idle_timeout_secs = 0\npool_max_idle = 5",
    ));
    for key in [
        "upstream.pool_max_connections",
        "upstream.pool_max_idle",
        "upstream.pool_idle_timeout_secs",
    ] {
        assert!(
            keys.contains(&key.to_owned()),
            "{key} missing from {keys:?}"
        );
    }
}

#[test]
fn login_deadline_is_bounded() {
    for (value, ok) in [
        ("2500", true),
        ("0", false),
        ("99", false),
        ("120001", false),
    ] {
        let text = good().replace(
            "[session]",
            &format!("login_deadline_ms = {value}\n\n[session]"),
        );
        let result = Config::from_toml_str(&text, Path::new("."), &env());
        match result {
            Ok((cfg, _)) => {
                assert!(ok, "{value} accepted");
                assert_eq!(cfg.wechat.login_deadline_ms.to_string(), value);
            }
            Err(e) => {
                assert!(!ok, "{value} refused: {e}");
                assert!(e.to_string().contains("wechat.login_deadline_ms"), "{e}");
            }
        }
    }
}

#[test]
fn unknown_key_is_refused() {
    let text = good().replace("[session]", "[session]\ncookie_nmae = \"x\"");
    let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("cookie_nmae"), "{shown}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = good()
        .replace("wx0123456789abcdef", "not-an-appid")
        .replace(AES, "short")
        .replace("0123456789abcdef0123456789abcdef-master", "tiny")
        .replace("https://auth.example.com", "http://auth.example.com");
    let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "wechat.component_appid",
        "wechat.encoding_aes_key",
        "session.master_secret",
        "server.public_url",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
}

#[test]
fn worker_threads_is_optional_and_bounded() {
    let (config, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert_eq!(config.server.worker_threads, None);
    let with = |n: &str| good().replace("[server]\n", &format!("[server]\nworker_threads = {n}\n"));
    let (config, _) = Config::from_toml_str(&with("1"), Path::new("."), &env()).unwrap();
    assert_eq!(config.server.worker_threads, Some(1));
    for refused in ["0", "100000"] {
        let err = Config::from_toml_str(&with(refused), Path::new("."), &env()).unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err:?}")
        };
        assert!(
            problems.iter().any(|p| p.key == "server.worker_threads"),
            "{problems:?}"
        );
    }
}

#[test]
fn connection_timeouts_have_defaults_and_refuse_zero() {
    let (config, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert_eq!(config.server.header_read_timeout_ms, 10_000);
    assert_eq!(config.server.idle_timeout_ms, 60_000);
    assert_eq!(config.server.body_timeout_ms, 30_000);
    assert_eq!(config.server.http2_keepalive_interval_ms, 20_000);
    assert_eq!(config.server.http2_keepalive_timeout_ms, 20_000);
    for key in [
        "header_read_timeout_ms",
        "idle_timeout_ms",
        "body_timeout_ms",
        "http2_keepalive_interval_ms",
        "http2_keepalive_timeout_ms",
    ] {
        let with = |n: &str| good().replace("[server]\n", &format!("[server]\n{key} = {n}\n"));
        let (config, _) = Config::from_toml_str(&with("1500"), Path::new("."), &env()).unwrap();
        assert!(format!("{:?}", config.server).contains(&format!("{key}: 1500")));
        for refused in ["0", "86400001"] {
            let err = Config::from_toml_str(&with(refused), Path::new("."), &env()).unwrap_err();
            let ConfigError::Invalid(problems) = err else {
                panic!("expected Invalid, got {err:?}")
            };
            let expected = format!("server.{key}");
            assert!(problems.iter().any(|p| p.key == expected), "{problems:?}");
        }
    }
}

#[test]
fn secrets_from_env_and_file() {
    let dir = std::env::temp_dir().join(format!("wxauth-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), "from-file-secret-0123456789\n").unwrap();
    let text = good()
        .replace(
            "component_secret = \"component-secret-value-1234\"",
            "component_secret_file = \"secret.txt\"",
        )
        .replace(
            "master_secret = \"0123456789abcdef0123456789abcdef-master\"",
            "",
        );
    let mut env = env();
    env.insert(
        "WXAUTH_MASTER_SECRET".into(),
        "env-master-secret-0123456789abcdef".into(),
    );
    let (_, secrets) = Config::from_toml_str(&text, &dir, &env).unwrap();
    assert_eq!(
        secrets.component_secret.unwrap().expose_secret(),
        "from-file-secret-0123456789"
    );
    assert_eq!(
        secrets.master_secret.unwrap().expose_secret(),
        "env-master-secret-0123456789abcdef"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn debug_shows_no_secret() {
    let (cfg, secrets) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    let shown = format!("{cfg:?} {secrets:?}");
    for secret in [
        "component-secret-value-1234",
        AES,
        "0123456789abcdef0123456789abcdef-master",
        "component_token_demo",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
}

#[test]
fn skip_rules_parse() {
    assert_eq!(
        parse_skip_rule("GET /public/*").unwrap(),
        (Some(http::Method::GET), "/public/*".to_owned())
    );
    assert_eq!(parse_skip_rule("* /x").unwrap().0, None);
    assert!(parse_skip_rule("GET /x?y=1").is_err());
    assert!(parse_skip_rule("GET x").is_err());
}

#[test]
fn dev_mode_requires_loopback() {
    let text =
        good().replace("127.0.0.1:8080", "0.0.0.0:8080") + "\n[dev]\nsimulate_wechat = true\n";
    let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
    assert!(err.to_string().contains("server.listen"), "{err}");
}

#[test]
fn refused_values_are_all_reported_with_their_keys_next_to_the_other_problems() {
    let text = good()
        .replace(
            "upstream = \"http://127.0.0.1:3000\"",
            "upstream = \"http://127.0.0.1:3000\"\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\", \"10.1.2.3\"]",
        )
        .replace(
            "[wechat]",
            "[auth]\nscope = \"snsapi_everything\"\nskip = [\"GET /ok\", \"GET /a/../b\", \"* /fine/*\", \"* /pub*lic\"]\n\n[wechat]",
        )
        .replace("[session]", "[session]\ncookie_nmae = \"x\"\nttl_secs = \"long\"")
        .replace("0123456789abcdef0123456789abcdef-master", "tiny");
    let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "auth.scope",
            "auth.skip[1]",
            "auth.skip[3]",
            "server.trusted_proxies[1]",
            "session.cookie_nmae",
            "session.ttl_secs",
            "session.master_secret",
        ],
        "{problems:#?}"
    );
    assert!(problems[3].message.contains("\"nope\""), "{problems:#?}");
    assert!(problems[2].message.contains("* /pub*lic"), "{problems:#?}");

    // A refused required value ends the search, without a "missing field" of our own making.
    let text = good().replace("127.0.0.1:8080", "not-an-address");
    let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "server.listen");
}

#[test]
fn a_bad_prefix_is_refused_at_its_key() {
    for bad in ["_wxauth", "/_wxauth/", "/a/./b", "/a%2e/b", "/"] {
        let text = good().replace("[wechat]", &format!("[auth]\nprefix = {bad:?}\n\n[wechat]"));
        let err = Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err();
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid, got {err:?}")
        };
        assert_eq!(problems.len(), 1, "{bad}: {problems:#?}");
        assert_eq!(problems[0].key, "auth.prefix", "{bad}");
        assert!(problems[0].message.contains(bad), "{problems:#?}");
    }
    let text = good().replace("[wechat]", "[auth]\nprefix = \"/auth\"\n\n[wechat]");
    let (config, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    assert_eq!(config.auth.prefix.as_str(), "/auth");
}

/// `good()` with `wechat.appid` replaced by a `[tenants]` section.
fn with_tenants(section: &str) -> String {
    format!(
        "{}\n{section}",
        good().replace("appid = \"wxa1b2c3d4e5f60708\"\n", "")
    )
}

fn problem_keys(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, Path::new("."), &env()) {
        Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

const TWO_TENANTS: &str = r#"
[tenants]
host_pattern = "{appid}.wx.example.com"
path_prefix = "/t/{appid}"
on_unauthorized = "end_sessions"
reconcile_interval_secs = 0
redirect_domains = ["Shop-A.example.com", "example.com", "wx.example.com"]

[[tenants.authorizer]]
appid = "wxa1b2c3d4e5f60708"
hosts = ["Shop-A.example.com.", "wxa1b2c3d4e5f60708.example.com"]
name = "A 店"
audience = "shop-a"

[[tenants.authorizer]]
appid = "wxb1b2c3d4e5f60708"
hosts = ["example.com"]
"#;

#[test]
fn tenants_load_into_the_library_types() {
    let (cfg, secrets) =
        Config::from_toml_str(&with_tenants(TWO_TENANTS), Path::new("."), &env()).unwrap();
    assert_eq!(cfg.wechat.appid, None);
    let tenants = cfg.tenants.as_ref().unwrap();
    let routing = tenants.routing();
    assert_eq!(routing.sites.len(), 2);
    assert_eq!(routing.sites[0].hosts[0].as_str(), "shop-a.example.com");
    assert_eq!(routing.sites[0].audience.as_deref(), Some("shop-a"));
    assert_eq!(
        routing.on_unauthorized,
        crate::layer::tenant::OnUnauthorized::EndSessions
    );
    let settings = tenants.tenant_settings();
    assert_eq!(settings.configured.len(), 2);
    assert_eq!(settings.reconcile_interval, None);
    assert_eq!(tenants.unchecked_hosts_warning(), None);
    let wechat = cfg
        .wechat
        .settings(
            &secrets,
            cfg.tenants.as_ref(),
            "http://127.0.0.1:1".parse().unwrap(),
            "http://127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
    assert!(matches!(
        wechat.mode,
        crate::wechat::oauth::OAuthMode::Component { tenants, .. } if tenants.configured.len() == 2
    ));
    assert_eq!(cfg.layer_settings().unwrap().tenants, Some(routing));
}

#[test]
fn tenant_problems_are_reported_at_their_keys() {
    // Values serde refuses, each at its own key.
    let text = with_tenants(
        r#"
[tenants]
host_pattern = "*.wx.example.com"
path_prefix = "/t"
mode = "sometimes"
on_unauthorized = "shrug"

[[tenants.authorizer]]
appid = "wxa1b2c3d4e5f60708"
hosts = ["a.example.com:8443", "ok.example.com"]
colour = "red"
"#,
    );
    let keys = problem_keys(&text);
    for key in [
        "tenants.host_pattern",
        "tenants.path_prefix",
        "tenants.mode",
        "tenants.on_unauthorized",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    // Cross-field rules.
    let text = with_tenants(
        r#"
[tenants]
host_pattern = "{appid}.wx.other.com"
redirect_domains = ["example.com", "b.com", "c.com", "d.com"]

[[tenants.authorizer]]
appid = "wxA1b2c3d4e5f60708"
hosts = ["shop.evil.com", "wxb1b2c3d4e5f60708.example.com"]
audience = ""

[[tenants.authorizer]]
appid = "wxb1b2c3d4e5f60708"
hosts = ["Shop.Evil.com"]
"#,
    );
    let keys = problem_keys(&text);
    for key in [
        "tenants.redirect_domains",
        "tenants.host_pattern",
        "tenants.authorizer[0].appid",
        "tenants.authorizer[0].audience",
        "tenants.authorizer[0].hosts[0]",
        "tenants.authorizer[0].hosts[1]",
        "tenants.authorizer[1].hosts[0]",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    // wechat.appid and [tenants] are exclusive; static mode needs accounts; component only.
    let text = format!("{}\n[tenants]\n", good()).replace(
        "mode = \"component\"",
        "mode = \"official_account\"\nofficial_account_secret = \"oa-secret-value-12345678\"",
    );
    let keys = problem_keys(&text);
    for key in ["tenants", "wechat.appid", "tenants.authorizer"] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    // Without [tenants], wechat.appid is required.
    let keys = problem_keys(&good().replace("appid = \"wxa1b2c3d4e5f60708\"\n", ""));
    assert!(keys.iter().any(|k| k == "wechat.appid"), "{keys:?}");
}

#[test]
fn unchecked_tenant_hosts_are_a_warning_not_an_error() {
    let text = with_tenants(
        "[tenants]\n[[tenants.authorizer]]\nappid = \"wxa1b2c3d4e5f60708\"\nhosts = [\"localhost\"]\n",
    );
    let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    assert!(cfg.tenants.unwrap().unchecked_hosts_warning().is_some());
}

#[test]
fn forward_auth_section_defaults_off_and_refuses_trusting_everyone() {
    let (cfg, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    let settings = cfg.layer_settings().unwrap().forward_auth;
    assert_eq!(settings, crate::layer::ForwardAuthSettings::default());
    assert!(!settings.enabled && !settings.apply_skip_rules);
    let text = format!(
        "{}
[forward_auth]
enabled = true
allowed_callers = [\"10.0.0.0/8\", \"192.0.2.7\"]
apply_skip_rules = true
",
        good()
    );
    let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    let settings = cfg.layer_settings().unwrap().forward_auth;
    assert!(settings.enabled && settings.apply_skip_rules);
    assert_eq!(settings.allowed_callers.len(), 2);
    assert!(settings.allows(Some("192.0.2.7".parse().unwrap())));
    for (callers, key) in [
        ("[\"0.0.0.0/0\"]", "forward_auth.allowed_callers"),
        ("[]", "forward_auth.allowed_callers"),
        ("[\"not-an-ip\"]", "forward_auth.allowed_callers[0]"),
    ] {
        let text = format!(
            "{}\n[forward_auth]\nenabled = true\nallowed_callers = {callers}\n",
            good()
        );
        let Err(ConfigError::Invalid(problems)) =
            Config::from_toml_str(&text, Path::new("."), &env())
        else {
            panic!("{callers} must be refused");
        };
        assert!(
            problems.iter().any(|p| p.key == key),
            "{callers}: {problems:?}"
        );
    }
}

#[test]
fn log_section_defaults_to_text_at_info_and_reports_bad_values() {
    let (cfg, _) = Config::from_toml_str(&good(), Path::new("."), &env()).unwrap();
    assert_eq!(cfg.log.settings(), crate::logging::LogSettings::default());
    let text = format!(
        "{}\n[log]\nformat = \"json\"\nlevel = \"warn,audit=info\"\n",
        good()
    );
    let (cfg, _) = Config::from_toml_str(&text, Path::new("."), &env()).unwrap();
    assert_eq!(cfg.log.format, crate::logging::LogFormat::Json);
    let text = format!("{}\n[log]\nformat = \"xml\"\nlevel = \"inof\"\n", good());
    let ConfigError::Invalid(problems) =
        Config::from_toml_str(&text, Path::new("."), &env()).unwrap_err()
    else {
        panic!("expected Invalid")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["log.format", "log.level"], "{problems:#?}");
}
