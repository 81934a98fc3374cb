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

use super::return_param;
use crate::layer::{
    body::OwnResponse,
    error::AuthError,
    respond::{add_cookie, redirect},
    state::AuthState,
    tenant::ResolvedTenant,
};

/// `GET|POST logout`.
///
/// Per tenant: only a session of `tenant` is ended. Another account's session (the same cookie
/// on a path-prefix set-up) is left alone, cookie included.
pub(super) async fn logout(
    auth: &AuthState,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    if started_by_another_site(&parts.headers, tenant.origin()) {
        return Err(AuthError::CrossSiteLogout);
    }
    let mut ours = true;
    if let Some(id) = auth.cookies.read_session(&parts.headers) {
        match auth.sessions.load(&id).await? {
            Some(record) if !auth.session_is_for(record.identity.appid.as_str(), tenant) => {
                ours = false;
            }
            _ => {
                // A store failure is an error page: the user must not believe they are logged
                // out.
                auth.sessions.delete(&id).await?;
                crate::metrics::sessions_ended(crate::metrics::SessionEnd::Logout, 1);
                auth.jwt
                    .invalidate_audience(id.expose_bytes(), tenant.audience())
                    .await;
                crate::audit::logout(tenant.appid().as_str(), &id);
            }
        }
    }
    let mut response = redirect(return_param(parts).as_str());
    if ours && has_session_cookie(auth, &parts.headers) {
        add_cookie(&mut response, auth.cookies.removal_cookie());
    }
    Ok(response)
}

/// The same-origin link that confirms a refused cross-site logout (same `return` path), for
/// the tenant mounted at `mount`.
pub(super) fn confirm_url(auth: &AuthState, mount: &str, parts: &Parts) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", return_param(parts).as_str())
        .finish();
    format!("{mount}{}/logout?{query}", auth.settings.dispatch.prefix)
}

/// Whether the request carries a cookie named like our session cookie (valid or not).
fn has_session_cookie(auth: &AuthState, headers: &HeaderMap) -> bool {
    let name = auth.cookies.session_cookie_name();
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .any(|c| c.name() == name)
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
