use super::*;
use http_body_util::BodyExt;

async fn body(r: OwnResponse) -> String {
    let bytes = r
        .into_body()
        .collect()
        .await
        .expect("infallible")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

#[tokio::test]
async fn browsers_get_a_bilingual_page_with_an_escaped_retry_link() {
    let r = AuthError::LoginRefused.render(Answer::Html, Some("/_wxauth/login?return=/a&x=\"<b>"));
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-store");
    let page = body(r).await;
    assert!(page.contains("未完成授权"));
    assert!(page.contains("Authorization not granted"));
    assert!(
        page.contains("href=\"/_wxauth/login?return=/a&amp;x=&quot;&lt;b&gt;\""),
        "{page}"
    );
}

#[tokio::test]
async fn api_clients_get_json() {
    let r =
        AuthError::Unauthenticated.render(Answer::Json, Some("https://x.example/_wxauth/login"));
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
    assert_eq!(v["error"], "unauthenticated");
    assert_eq!(v["login_url"], "https://x.example/_wxauth/login");
}

#[tokio::test]
async fn details_never_reach_the_client() {
    let r = AuthError::Store(StoreError::Backend(
        "redis: connection refused at 10.0.0.3 secret=abc".into(),
    ))
    .render(Answer::Html, None);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let page = body(r).await;
    assert!(
        !page.contains("10.0.0.3") && !page.contains("secret"),
        "{page}"
    );
    let misconfigured = WeChatError::Api {
        code: 61011,
        errmsg: "invalid component rid: 1".into(),
        endpoint: "sns/oauth2/component/access_token",
    };
    let r = AuthError::from(misconfigured).render(Answer::Json, Some("/login"));
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
    assert!(
        v.get("login_url").is_none(),
        "retrying does not help a misconfiguration"
    );
    assert!(!v.to_string().contains("rid"), "{v}");
}

#[test]
fn status_classes() {
    let api = |code| {
        AuthError::from(WeChatError::Api {
            code,
            errmsg: String::new(),
            endpoint: "x",
        })
    };
    let not_ready = AuthError::from(WeChatError::NoTicket);
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    for answer in [Answer::Html, Answer::Json] {
        let r = not_ready.render(answer, None);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "60");
    }
    assert!(
        !api(-1)
            .render(Answer::Html, None)
            .headers()
            .contains_key(http::header::RETRY_AFTER)
    );
    assert_eq!(not_ready.code(), "platform_not_ready");
    assert_eq!(api(61006).code(), "platform_not_ready");
    let timeout = AuthError::from(WeChatError::Timeout { endpoint: "x" });
    assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api(-1).status(), StatusCode::BAD_GATEWAY);
    assert_eq!(api(40163).status(), StatusCode::BAD_REQUEST);
    assert_eq!(api(40163).code(), "code_rejected");
    let forged = AuthError::from(WeChatError::Push(PushError::Crypto(
        crate::wechat::crypto::CryptoError::InvalidSignature,
    )));
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        AuthError::Internal("x").status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
fn every_row_is_filled_in() {
    let rows = [
        &UNAUTHENTICATED,
        &LOGIN_REFUSED,
        &SNAPSHOT_USER,
        &INVALID_STATE,
        &APPID_MISMATCH,
        &CODE_REJECTED,
        &WECHAT_TIMEOUT,
        &WECHAT_UNAVAILABLE,
        &PLATFORM_NOT_READY,
        &MISCONFIGURED,
        &PUSH_FORGED,
        &PUSH_MALFORMED,
        &STORE_UNAVAILABLE,
        &INTERNAL,
        &PAYLOAD_TOO_LARGE,
        &BAD_REQUEST,
        &NOT_FOUND,
        &METHOD_NOT_ALLOWED,
        &BAD_PATH,
        &CROSS_SITE_LOGOUT,
    ];
    for row in rows {
        for text in [row.code, row.zh_title, row.zh, row.en_title, row.en] {
            assert!(!text.is_empty(), "{row:?}");
        }
        assert!(
            row.status.is_client_error() || row.status.is_server_error(),
            "{row:?}"
        );
    }
}
