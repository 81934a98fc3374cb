//! `login`: starts a WeChat login — a fresh single-use state bound to this browser by the flow
//! cookie, recorded server-side with the return path, then a 302 to WeChat's authorize page.

use http::HeaderMap;
use http::request::Parts;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::error::AuthError;
use crate::layer::Shared;
use crate::layer::response::{OwnResponse, add_cookie, redirect};
use crate::session::{FlowBinding, FlowKey, LoginFlow, ReturnPath};
use crate::wechat::OAuthState;

/// 32 alphanumeric characters ≈ 190 bits, within WeChat's `[A-Za-z0-9]{,128}` for `state`.
const STATE_LEN: usize = 32;

/// Handles `GET login?return=/path`. An unsafe return path is replaced by `/`.
pub(crate) async fn handle(shared: &Shared, req: &Parts) -> OwnResponse {
    let return_path = super::query_param(&req.uri, "return")
        .and_then(|r| match ReturnPath::parse(&r) {
            Ok(path) => Some(path),
            Err(err) => {
                tracing::debug!(error = %err, "refused return path");
                None
            }
        })
        .unwrap_or_default();
    start(shared, &req.headers, return_path).await
}

/// Starts a flow and answers with the redirect to WeChat (or an error page).
pub(crate) async fn start(
    shared: &Shared,
    headers: &HeaderMap,
    return_path: ReturnPath,
) -> OwnResponse {
    match try_start(shared, headers, return_path).await {
        Ok(response) => response,
        Err(err) => err.render(super::wants_html(headers), None),
    }
}

async fn try_start(
    shared: &Shared,
    headers: &HeaderMap,
    return_path: ReturnPath,
) -> Result<OwnResponse, AuthError> {
    let state: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(STATE_LEN)
        .map(char::from)
        .collect();
    let binding = FlowBinding::generate();
    let flow = LoginFlow {
        return_path,
        created_at: crate::wechat::token::now_unix().max(0) as u64,
        binding: binding.clone(),
    };
    shared
        .sessions
        .put_flow(&FlowKey::new(state.clone()), flow, shared.settings.flow_ttl)
        .await
        .map_err(|e| AuthError::Store(e.to_string()))?;
    // At most a few pending flows per browser: the cookie keeps the newest ones only.
    let mut pending = shared.cookies.read_flow(headers).unwrap_or_default();
    pending.push(binding);
    let url = shared.wechat.authorize_url(
        &shared.callback_url,
        shared.settings.scope,
        &OAuthState::new(state),
    );
    let mut response = redirect(&url);
    add_cookie(&mut response, shared.cookies.flow_cookie(&pending));
    Ok(response)
}
