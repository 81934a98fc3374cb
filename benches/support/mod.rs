//! What several benches share. Cargo builds bench targets from `benches/*.rs` only, so this
//! folder is a module each bench declares (`mod support;`), not a bench of its own.

use http::HeaderValue;

/// The `name=value` pair of a `Set-Cookie` header value, as a browser sends it back (parsed
/// with the `cookie` crate).
pub(crate) fn cookie_pair(set_cookie: &HeaderValue) -> String {
    let cookie = cookie::Cookie::parse(set_cookie.to_str().unwrap()).unwrap();
    format!("{}={}", cookie.name(), cookie.value())
}
