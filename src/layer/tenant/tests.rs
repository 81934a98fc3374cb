use super::*;
use crate::wechat::tenants::TenantMode;

fn appid(n: u8) -> AuthorizerAppId {
    AuthorizerAppId::new(format!("wx{n:016x}"))
}

fn site(n: u8, hosts: &[&str]) -> TenantSite {
    TenantSite {
        appid: appid(n),
        hosts: hosts
            .iter()
            .map(|h| TenantHost::try_from((*h).to_owned()).unwrap())
            .collect(),
        name: None,
        audience: (n == 1).then(|| "shop-1".to_owned()),
    }
}

fn resolver(routing: &TenantRouting, tenants: &Tenants) -> TenantResolver {
    let public = url::Url::parse("https://platform.example.com:8443").unwrap();
    TenantResolver::new(Some(routing), tenants.clone(), None, &public).unwrap()
}

fn routing() -> TenantRouting {
    TenantRouting {
        sites: vec![
            site(1, &["shop-a.example.com"]),
            site(2, &["shop-b.example.com"]),
        ],
        host_pattern: Some(HostPattern::try_from("{appid}.wx.example.com".to_owned()).unwrap()),
        path_prefix: Some(PathPrefix::try_from("/t/{appid}".to_owned()).unwrap()),
        ..TenantRouting::default()
    }
}

#[test]
fn hosts_are_compared_in_one_spelling() {
    for (raw, normal) in [
        ("Shop-A.Example.COM", Some("shop-a.example.com")),
        ("shop-a.example.com.", Some("shop-a.example.com")),
        ("shop-a.example.com:8443", Some("shop-a.example.com")),
        ("SHOP-A.EXAMPLE.COM.:443", Some("shop-a.example.com")),
        ("shop-a.example.com", Some("shop-a.example.com")),
        ("shop-a.example.com.:80", Some("shop-a.example.com")),
        ("[::1]:80", Some("[::1]")),
        ("[::ABCD]", Some("[::abcd]")),
        ("user@shop-a.example.com", None),
        ("shop-a.example.com..", None),
        ("", None),
        ("a b", None),
    ] {
        assert_eq!(normalize_host(raw).as_deref(), normal, "{raw:?}");
        // The same spelling from a request's `Host` (borrowed from it when already normal).
        let mut headers = HeaderMap::new();
        headers.insert(HOST, http::HeaderValue::from_str(raw).unwrap());
        let origin_form: Uri = "/x".parse().unwrap();
        let from_request = request_host(&origin_form, &headers);
        assert_eq!(
            from_request.as_ref().ok().and_then(|h| h.as_deref()),
            normal,
            "{raw:?}"
        );
        assert_eq!(from_request.is_err(), normal.is_none(), "{raw:?}");
    }
}

#[test]
fn typed_values_refuse_what_cannot_match() {
    assert!(TenantHost::try_from("shop.example.com:80".to_owned()).is_err());
    assert!(TenantHost::try_from("https://shop.example.com".to_owned()).is_err());
    assert!(TenantHost::try_from("*.example.com".to_owned()).is_err());
    assert_eq!(
        TenantHost::try_from("Shop.Example.com.".to_owned())
            .unwrap()
            .as_str(),
        "shop.example.com"
    );
    for bad in [
        "wx.example.com",
        "x{appid}.example.com",
        "{appid}.com.",
        "{appid}example.com",
        "{appid}.[::1]",
    ] {
        assert!(HostPattern::try_from(bad.to_owned()).is_err(), "{bad}");
    }
    assert_eq!(
        HostPattern::try_from("{appid}.WX.example.com".to_owned())
            .unwrap()
            .domain(),
        "wx.example.com"
    );
    for bad in ["/t", "/t/{appid}/x", "t/{appid}", "/{appid}", "/t//{appid}"] {
        assert!(PathPrefix::try_from(bad.to_owned()).is_err(), "{bad}");
    }
    assert_eq!(
        PathPrefix::try_from("/t/{appid}".to_owned())
            .unwrap()
            .base(),
        "/t"
    );
}

#[test]
fn first_match_wins_and_nothing_else_resolves() {
    let tenants = Tenants::new(TenantMode::Static, &[appid(1), appid(2)]);
    let r = resolver(&routing(), &tenants);
    let t = r.resolve(Some("shop-a.example.com"), "/x").unwrap();
    assert_eq!((t.appid(), t.by()), (&appid(1), ResolvedBy::Host));
    assert_eq!(t.origin(), "https://shop-a.example.com:8443");
    assert_eq!(t.audience().map(|a| &**a), Some("shop-1"));

    let host = format!("{}.wx.example.com", appid(2));
    let t = r.resolve(Some(&host), "/x").unwrap();
    assert_eq!((t.appid(), t.by()), (&appid(2), ResolvedBy::Pattern));
    assert_eq!(t.origin(), format!("https://{host}:8443"));

    // The exact host wins over the path prefix.
    let path = format!("/t/{}/orders", appid(2));
    let t = r.resolve(Some("shop-a.example.com"), &path).unwrap();
    assert_eq!(t.appid(), &appid(1));
    let t = r.resolve(Some("platform.example.com"), &path).unwrap();
    assert_eq!((t.appid(), t.by()), (&appid(2), ResolvedBy::PathPrefix));
    assert_eq!(t.mount(), format!("/t/{}", appid(2)));
    assert_eq!(t.local_path(&path), "/orders");
    assert_eq!(t.local_path(t.mount()), "/");

    // Unknown appids by pattern or prefix, other hosts, upper-case path segments: no tenant.
    let unknown = format!("{}.wx.example.com", appid(9));
    for (host, path) in [
        (Some(unknown.as_str()), "/"),
        (Some("platform.example.com"), "/t/wx0000000000000009/x"),
        (Some("platform.example.com"), "/t/WX0000000000000001/x"),
        (Some("platform.example.com"), "/t/wx0000000000000001x/x"),
        (Some("evil.wx.example.com"), "/"),
        (Some("a.b.wx.example.com"), "/"),
        (None, "/"),
    ] {
        assert_eq!(
            r.resolve(host, path).unwrap_err(),
            TenantRejection::Unknown,
            "{host:?} {path}"
        );
    }
    assert!(
        r.by_query(appid(1).as_str()).is_err(),
        "query selection is opt-in"
    );
}

#[test]
fn revoked_tenants_resolve_but_refuse_logins() {
    let tenants = Tenants::new(TenantMode::Static, &[appid(1), appid(2)]);
    let r = resolver(&routing(), &tenants);
    let t = r.resolve(Some("shop-b.example.com"), "/").unwrap();
    assert!(t.check_login().is_ok());
    assert_eq!(
        rejection_for(TenantStatus::Revoked),
        Some(TenantRejection::Revoked)
    );
    assert_eq!(
        rejection_for(TenantStatus::NoWebPermission),
        Some(TenantRejection::NoWebPermission)
    );
}

#[test]
fn the_single_tenant_shorthand_resolves_every_host() {
    let tenants = Tenants::new(TenantMode::Static, &[appid(1)]);
    let public = url::Url::parse("http://127.0.0.1:8080").unwrap();
    let r = TenantResolver::new(None, tenants.clone(), Some(&appid(1)), &public).unwrap();
    for host in [None, Some("anything.example"), Some("127.0.0.1")] {
        let t = r.resolve(host, "/t/wx0000000000000002/").unwrap();
        assert_eq!(
            (t.appid(), t.by(), t.mount()),
            (&appid(1), ResolvedBy::Single, "")
        );
        assert_eq!(t.origin(), "http://127.0.0.1:8080");
    }
    assert_eq!(
        TenantResolver::new(None, tenants, None, &public).unwrap_err(),
        ResolverError::NoSingleTenant
    );
}

#[test]
fn duplicate_hosts_are_refused() {
    let tenants = Tenants::new(TenantMode::Static, &[appid(1), appid(2)]);
    let public = url::Url::parse("https://p.example.com").unwrap();
    let routing = TenantRouting {
        sites: vec![site(1, &["a.example.com"]), site(2, &["A.example.com."])],
        ..TenantRouting::default()
    };
    assert!(matches!(
        TenantResolver::new(Some(&routing), tenants, None, &public),
        Err(ResolverError::DuplicateHost(_))
    ));
}

#[test]
fn the_request_host_is_one_host() {
    let headers = |values: &[&str]| {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HOST, v.parse().unwrap());
        }
        h
    };
    let origin_form: Uri = "/x".parse().unwrap();
    let absolute: Uri = "http://Shop-A.example.com/x".parse().unwrap();
    assert_eq!(request_host(&origin_form, &headers(&[])).unwrap(), None);
    assert_eq!(
        request_host(&origin_form, &headers(&["SHOP-A.example.com:80"]))
            .unwrap()
            .as_deref(),
        Some("shop-a.example.com")
    );
    assert_eq!(
        request_host(&absolute, &headers(&[])).unwrap().as_deref(),
        Some("shop-a.example.com")
    );
    assert_eq!(
        request_host(&absolute, &headers(&["shop-a.example.com."]))
            .unwrap()
            .as_deref(),
        Some("shop-a.example.com")
    );
    for (uri, values) in [
        (&absolute, vec!["shop-b.example.com"]),
        (&origin_form, vec!["a.example.com", "a.example.com"]),
        (&origin_form, vec!["a b"]),
    ] {
        assert_eq!(
            request_host(uri, &headers(&values)).unwrap_err(),
            TenantRejection::BadHost
        );
    }
}
