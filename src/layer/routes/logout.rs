//! `logout?return=/path` (GET or POST): ends the session for good.
//!
//! The server-side record is deleted (a copied cookie stops working at once — vouch #187,
//! caddy-security #272), the cached JWT is dropped, the cookie is cleared, and the browser is
//! sent to the validated same-origin `return` path (default `/`).
//!
//! Only this site may log a user out. A logout another site starts — an `<img>` or a form
//! pointing here — is refused (403) with a small page whose same-origin link confirms it: the
//! browser says so in `Sec-Fetch-Site: cross-site` or `same-site` (a sibling subdomain is
//! another site too), and older browsers in an `Origin` or `Referer` that is not our public
//! origin. A request with none of these (typed into the address bar, or a non-browser client)
//! is allowed, as are `Sec-Fetch-Site: same-origin` and `none`.

use http::{HeaderMap, header, request::Parts};

use super::{login::has_session_cookie, return_param};
use crate::{
    layer::error::AuthError,
    layer::{
        body::{OwnResponse, add_cookie, redirect},
        pipeline::Shared,
    },
};

/// `GET|POST logout`.
pub(crate) async fn logout(shared: &Shared, parts: &Parts) -> Result<OwnResponse, AuthError> {
    if started_by_another_site(&parts.headers, &shared.origin) {
        return Err(AuthError::CrossSiteLogout);
    }
    if let Some(id) = shared.cookies.read_session(&parts.headers) {
        // A store failure is an error page: the user must not believe they are logged out.
        shared.sessions.delete(&id).await?;
        shared.jwt.invalidate(id.expose_bytes()).await;
        tracing::info!(session = %id.fingerprint(), "logged out");
    }
    let mut response = redirect(return_param(parts).as_str());
    if has_session_cookie(shared, &parts.headers) {
        add_cookie(&mut response, shared.cookies.removal_cookie());
    }
    Ok(response)
}

/// The same-origin link that confirms a refused cross-site logout (same `return` path).
pub(crate) fn confirm_url(shared: &Shared, parts: &Parts) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", return_param(parts).as_str())
        .finish();
    format!("{}/logout?{query}", shared.settings.prefix)
}

/// Whether the browser says another site started this request (see the module docs).
fn started_by_another_site(headers: &HeaderMap, origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        return !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none"));
    }
    let foreign = |value: &http::HeaderValue| {
        value
            .to_str()
            .ok()
            .and_then(|v| url::Url::parse(v).ok())
            .is_none_or(|url| url.origin().ascii_serialization() != origin)
    };
    headers.get_all(header::ORIGIN).iter().any(foreign)
        || headers.get_all(header::REFERER).iter().any(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in fields {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn another_site_is_recognized_in_every_signal() {
        let us = "https://app.example.com";
        for refused in [
            with(&[("sec-fetch-site", "cross-site")]),
            with(&[("sec-fetch-site", "same-site")]),
            with(&[("origin", "https://evil.example")]),
            with(&[("origin", "null")]),
            with(&[("origin", "http://app.example.com")]),
            with(&[("referer", "https://evil.example/page")]),
            with(&[("referer", "https://app.example.com.evil.example/")]),
            // The fetch metadata wins over a forgeable-looking Referer.
            with(&[
                ("sec-fetch-site", "cross-site"),
                ("referer", "https://app.example.com/"),
            ]),
        ] {
            assert!(started_by_another_site(&refused, us), "{refused:?}");
        }
        for allowed in [
            HeaderMap::new(),
            with(&[("sec-fetch-site", "same-origin")]),
            with(&[("sec-fetch-site", "none")]),
            with(&[("origin", "https://app.example.com")]),
            with(&[("referer", "https://app.example.com/account?x=1")]),
        ] {
            assert!(!started_by_another_site(&allowed, us), "{allowed:?}");
        }
    }
}
