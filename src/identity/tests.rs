use super::*;

fn sample() -> Identity {
    Identity {
        openid: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
        unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
        nickname: "张三🐼 100%".into(),
        avatar: "https://thirdwx.qlogo.cn/mmopen/a/132".into(),
        appid: "wxa1b2c3d4e5f60708".into(),
        scope: Scope::UserInfo,
    }
}

#[test]
fn names_compare_ignoring_case_and_underscore() {
    assert!(same_header_name("x-wechat-openid", "X_WeChat_OpenID"));
    assert!(same_header_name("x-wechat-jwt", "x-wechat_jwt"));
    assert!(!same_header_name("x-wechat-jwt", "x-wechat-jwtx"));
    assert!(same_header_name("x-wechat-jwt", "x.wechat-jwt"));
    assert!(same_header_name("x-wechat-openid", "X.WeChat_OpenID"));
    assert!(!same_header_name("x-wechat-jwt", "xxwechat-jwt"));
}

#[test]
fn connection_cannot_nominate_our_headers() {
    let list = HeaderSettings::default().strip_list();
    let mut h = HeaderMap::new();
    h.append(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, X-WeChat-Jwt"),
    );
    h.append(
        header::CONNECTION,
        HeaderValue::from_static("x.wechat_openid,Upgrade"),
    );
    h.insert("x-other", HeaderValue::from_static("1"));
    assert_eq!(list.strip(&mut h), 2);
    let left: Vec<_> = h.get_all(header::CONNECTION).iter().collect();
    assert_eq!(left, ["keep-alive, Upgrade"]);
    let mut only_ours = HeaderMap::new();
    only_ours.insert(header::CONNECTION, HeaderValue::from_static("x-wechat-jwt"));
    list.strip(&mut only_ours);
    assert!(only_ours.get(header::CONNECTION).is_none());
    // Nothing to do: untouched.
    let mut plain = HeaderMap::new();
    plain.insert(header::CONNECTION, HeaderValue::from_static("close"));
    assert_eq!(list.strip(&mut plain), 0);
    assert_eq!(plain[header::CONNECTION], "close");
}

#[test]
fn strip_removes_every_spelling_and_duplicate() {
    let list = HeaderSettings::default().strip_list();
    let mut h = HeaderMap::new();
    for name in [
        "X-WeChat-Jwt",
        "x-wechat_jwt",
        "X_WeChat_OpenID",
        "x-wechat-unionid",
        "X-WECHAT-NICKNAME",
        "x_wechat_avatar",
        "X-WeChat-AppID",
        "x.wechat.jwt",
        "X.WeChat_OpenID",
    ] {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
        h.append(name.clone(), HeaderValue::from_static("forged"));
        h.append(name, HeaderValue::from_static("forged-again"));
    }
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
    h.insert("x-wechat-other", HeaderValue::from_static("kept"));
    list.strip(&mut h);
    assert_eq!(h.len(), 2, "{h:?}");
    assert!(
        h.contains_key(header::AUTHORIZATION),
        "not the carrier: kept"
    );
    assert!(h.contains_key("x-wechat-other"));
}

#[test]
fn authorization_is_stripped_only_when_it_carries_the_jwt() {
    let settings = HeaderSettings {
        jwt: JwtCarrier::AuthorizationBearer,
        plain_headers: false,
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer forged"),
    );
    settings.strip_list().strip(&mut h);
    assert!(h.is_empty());
}

#[test]
fn custom_jwt_header_is_stripped_too() {
    let settings = HeaderSettings {
        jwt: JwtCarrier::Header(HeaderName::from_static("x-user-token")),
        plain_headers: false,
    };
    let list = settings.strip_list();
    assert!(list.matches("X_User_Token"));
    assert!(list.matches("x-wechat-jwt"));
}

#[test]
fn plain_headers_are_percent_encoded_utf8() {
    let settings = HeaderSettings {
        jwt: JwtCarrier::default(),
        plain_headers: true,
    };
    let mut h = HeaderMap::new();
    sample().project_headers(&settings, HeaderValue::from_static("a.b.c"), &mut h);
    let nick = h
        .get(NICKNAME_HEADER)
        .expect("nickname")
        .to_str()
        .expect("ascii");
    assert_eq!(nick, "%E5%BC%A0%E4%B8%89%F0%9F%90%BC%20100%25");
    let decoded = percent_encoding::percent_decode_str(nick)
        .decode_utf8()
        .expect("utf8");
    assert_eq!(decoded, "张三🐼 100%");
    assert_eq!(
        h.get(AVATAR_HEADER).expect("avatar"),
        "https://thirdwx.qlogo.cn/mmopen/a/132"
    );
    assert_eq!(h.get(JWT_HEADER).expect("jwt"), "a.b.c");
}

#[test]
fn plain_headers_off_sends_only_the_jwt() {
    let mut h = HeaderMap::new();
    let settings = HeaderSettings {
        jwt: JwtCarrier::AuthorizationBearer,
        plain_headers: false,
    };
    sample().project_headers(&settings, HeaderValue::from_static("a.b.c"), &mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h.get(header::AUTHORIZATION).expect("auth"), "Bearer a.b.c");
    let mut h = HeaderMap::new();
    sample().project_headers(&settings, HeaderValue::from_static("Bearer a.b.c"), &mut h);
    assert_eq!(h.get(header::AUTHORIZATION).expect("auth"), "Bearer a.b.c");
}

#[test]
fn control_characters_cannot_inject_headers() {
    let v = encode_header_value("evil\r\nX-Admin: 1");
    assert_eq!(v, "evil%0D%0AX-Admin:%201");
}
