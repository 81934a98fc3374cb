//! The desktop's routes: the page (a new ticket), the code, the status poll, the finish.
//! Everything but the page needs the desktop cookie of the ticket; without it, or for another
//! account's ticket, the answer is the same 404 as for an unknown id (and counts as a miss).

use http::{Method, StatusCode, request::Parts};

use super::{
    Bridge, code, device,
    event::{self},
    pages::{self, DesktopPage},
    route_path,
    secrets::{self, Holder},
    secure, tenant_name,
    ticket::{Refusal, State, Status, Ticket, now_ms},
};
use crate::{
    layer::{
        body::OwnResponse,
        error::AuthError,
        respond::{add_cookie, html, json, redirect},
        routes::{callback::issue_session, query_param},
        state::AuthState,
        tenant::ResolvedTenant,
    },
    metrics::qr_ticket,
    session::{ReturnPath, TicketKey},
};

/// Purpose label of the desktop secret's digest.
pub(super) const DESKTOP: &str = "wxauth-qr-desktop";

/// `GET qr?return=/path` and a navigation without a session: a new ticket bound to this
/// browser, and the page.
///
/// `HEAD` (on `qr`, or a `HEAD` navigation without a session) changes nothing: it gets the
/// GET's status and headers (the same refusals, `text/html`, `no-store`) with an empty body, but
/// no ticket is created, no creation is counted against the address and no cookie is set. A
/// 405 would not fit: a `HEAD` navigation to a protected path lands here, and that path
/// answers `HEAD` once logged in; every read-only route of the layer takes `GET, HEAD`.
pub(super) async fn page(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
    return_path: ReturnPath,
) -> Result<OwnResponse, AuthError> {
    // The same refusals as a login start: the account's status, a platform that cannot log in.
    auth.wechat.check_tenant(tenant.appid())?;
    auth.wechat.ensure_login_possible().await?;
    if parts.method == Method::HEAD {
        return Ok(html(StatusCode::OK, String::new()));
    }
    let settings = &auth.settings.qr;
    let ip = device::client_ip(parts, &auth.settings.trusted_proxies);
    if !bridge.creations.hit(ip).await {
        qr_ticket(event::REFUSED_RATE);
        tracing::info!("QR ticket refused: too many from this address");
        return Err(AuthError::QrRateLimited);
    }
    let secure = secure(tenant);
    // One secret per browser, so that several tabs each keep their own ticket.
    let desktop_secret = Holder::Desktop
        .read(&parts.headers, secure)
        .unwrap_or_else(secrets::random_token);
    let id = secrets::random_token();
    let now = now_ms();
    let ticket = Ticket {
        tenant: tenant.appid().as_str().to_owned(),
        return_path: return_path.clone(),
        desktop: secrets::digest(DESKTOP, &desktop_secret),
        desktop_ip: ip.map(|ip| ip.to_string()),
        desktop_agent: device::agent_summary(&parts.headers),
        created_ms: now,
        state: State::Pending,
    };
    if !bridge.insert(&id, &ticket, settings.absolute_ttl).await? {
        qr_ticket(event::REFUSED_FULL);
        tracing::warn!("QR ticket refused: the ticket store is full");
        return Err(AuthError::QrBusy);
    }
    qr_ticket(event::CREATED);
    tracing::info!(
        ticket = TicketKey::of(&id).fingerprint(),
        tenant = auth.label(tenant),
        "QR login ticket created"
    );
    let scan_url = scan_url(auth, tenant, &id);
    let svg = code::svg(&scan_url).ok_or(AuthError::Internal("QR code too long"))?;
    let poll_url = format!("{}?id={id}", route_path(auth, tenant, "/qr/poll"));
    let refresh_url = refresh_url(auth, tenant, &return_path);
    let dev_phone_link = settings.dev_phone.as_ref().map(|aid| {
        let mut link = aid.link.clone();
        link.query_pairs_mut().append_pair("go", &scan_url);
        link.to_string()
    });
    let body = pages::desktop(&DesktopPage {
        tenant_name: &tenant_name(auth, tenant),
        svg: &svg,
        scan_url: &scan_url,
        poll_url: &poll_url,
        refresh_url: &refresh_url,
        expires_in: ticket.expires_in(settings, now),
        dev_phone_link: dev_phone_link.as_deref(),
    });
    let mut response = html(StatusCode::OK, body);
    add_cookie(
        &mut response,
        Holder::Desktop.set(&desktop_secret, secure, settings.absolute_ttl.as_secs()),
    );
    Ok(response)
}

/// The QR link: `{origin}{mount}{prefix}/qr/s/{id}` (about 60 bytes: a version-4 code).
fn scan_url(auth: &AuthState, tenant: &ResolvedTenant, id: &str) -> String {
    format!(
        "{}{}/{id}",
        tenant.origin(),
        route_path(auth, tenant, "/qr/s")
    )
}

/// `qr?return=…`: a new code for the same return path.
fn refresh_url(auth: &AuthState, tenant: &ResolvedTenant, return_path: &ReturnPath) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("return", return_path.as_str())
        .finish();
    format!("{}?{query}", route_path(auth, tenant, "/qr"))
}

/// The ticket named by `?id=` that this desktop made for this account, with its id and the
/// bytes it was read from; otherwise the 404 of an unknown id (counted per address; 429 past
/// the limit).
async fn own_ticket(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<(String, Vec<u8>, Ticket), AuthError> {
    let ip = device::client_ip(parts, &auth.settings.trusted_proxies);
    if bridge.misses.exceeded(ip).await {
        qr_ticket(event::REFUSED_RATE);
        return Err(AuthError::QrRateLimited);
    }
    let id = query_param(parts, "id").filter(|id| secrets::is_token(id));
    let desktop = Holder::Desktop.read(&parts.headers, secure(tenant));
    let found = match (id, desktop) {
        (Some(id), Some(desktop)) => bridge.load(&id).await?.and_then(|(raw, ticket)| {
            let mine = crate::secret::constant_time_eq(
                ticket.desktop.as_bytes(),
                secrets::digest(DESKTOP, &desktop).as_bytes(),
            );
            (mine && ticket.tenant == tenant.appid().as_str()).then_some((id, raw, ticket))
        }),
        _ => None,
    };
    match found {
        Some(found) => Ok(found),
        None => Err(miss(bridge, ip).await),
    }
}

/// Counts a miss (unknown, foreign or not-this-desktop's id) and gives its 404.
pub(super) async fn miss(bridge: &Bridge, ip: Option<std::net::IpAddr>) -> AuthError {
    bridge.misses.hit(ip).await;
    qr_ticket(event::REFUSED_UNKNOWN);
    tracing::debug!("QR request for an unknown ticket (or without its cookie)");
    AuthError::NotFound
}

/// `GET qr/code.svg?id=…`: the code alone.
pub(super) async fn code(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    let (id, _, _) = own_ticket(auth, bridge, tenant, parts).await?;
    let scan_url = scan_url(auth, tenant, &id);
    let svg = code::svg(&scan_url).ok_or(AuthError::Internal("QR code too long"))?;
    let mut response = html(StatusCode::OK, svg);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("image/svg+xml"),
    );
    Ok(response)
}

/// `GET qr/poll?id=…[&seen=<status>][&html=1]`: the status. With `seen`, waits (up to
/// `poll_wait`, while a waiting slot is free) until it differs; never names who scanned. `HEAD`
/// never waits.
pub(super) async fn poll(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    let settings = &auth.settings.qr;
    // Subscribed before the first read, so no change between the read and the wait is lost.
    let mut changes = bridge.changes.subscribe();
    let (id, _, mut ticket) = own_ticket(auth, bridge, tenant, parts).await?;
    let as_html = query_param(parts, "html").as_deref() == Some("1");
    let seen = query_param(parts, "seen").and_then(|s| Status::parse(&s));
    // A `HEAD` gets the status at once: no long poll, no waiting slot (it has no body to wait for).
    let waiting = match seen {
        Some(_) if !as_html && parts.method != Method::HEAD => {
            bridge.polls.clone().try_acquire_owned().ok()
        }
        _ => None,
    };
    let until = tokio::time::Instant::now() + settings.poll_wait;
    let mut gone = false;
    let status = loop {
        let now = now_ms();
        let status = if gone {
            Status::Expired
        } else {
            ticket.status(settings, now)
        };
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if waiting.is_none() || Some(status) != seen || status.is_final() || left.is_zero() {
            break status;
        }
        let _ = tokio::time::timeout(left.min(super::RECHECK), changes.changed()).await;
        match bridge.load(&id).await? {
            Some((_, fresh)) => ticket = fresh,
            None => gone = true,
        }
    };
    drop(waiting);
    let finish_url = format!("{}?id={id}", route_path(auth, tenant, "/qr/finish"));
    if as_html {
        let self_url = format!("{}?id={id}&html=1", route_path(auth, tenant, "/qr/poll"));
        let refresh = refresh_url(auth, tenant, &ticket.return_path);
        return Ok(html(
            StatusCode::OK,
            pages::status_page(status, &self_url, &finish_url, &refresh),
        ));
    }
    let mut body = serde_json::json!({
        "status": status.as_str(),
        "expires_in": if gone { 0 } else { ticket.expires_in(settings, now_ms()) },
    });
    if status == Status::Approved {
        body["next"] = serde_json::Value::from(finish_url);
    }
    Ok(json(StatusCode::OK, &body))
}

/// `GET qr/finish?id=…`: the desktop redeems the approved ticket — one atomic take — and gets
/// a fresh session through the callback's own code, then goes where it first asked to.
pub(super) async fn finish(
    auth: &AuthState,
    bridge: &Bridge,
    tenant: &ResolvedTenant,
    parts: &Parts,
) -> Result<OwnResponse, AuthError> {
    let settings = &auth.settings.qr;
    let (id, raw, ticket) = own_ticket(auth, bridge, tenant, parts).await?;
    let identity = match ticket.redeemable(settings, now_ms()) {
        Ok(identity) => identity.clone(),
        Err(Refusal::Expired) => {
            qr_ticket(event::REFUSED_EXPIRED);
            return Err(AuthError::QrExpired);
        }
        Err(Refusal::Used) => {
            qr_ticket(event::REFUSED_USED);
            return Err(AuthError::NotFound);
        }
    };
    if !bridge.take(&id, &raw).await? {
        // Another request (a second tab, a double click) redeemed it first.
        qr_ticket(event::REFUSED_USED);
        tracing::info!(
            ticket = TicketKey::of(&id).fingerprint(),
            "QR ticket already redeemed"
        );
        return Err(AuthError::NotFound);
    }
    // What the callback checks, now: the account may still log in, the person may still.
    auth.wechat.check_tenant(tenant.appid())?;
    auth.admit(&identity)?;
    let session = issue_session(auth, &parts.headers, identity).await?;
    qr_ticket(event::REDEEMED);
    crate::metrics::login_completed(ticket.created_ms / 1000, tenant.appid().as_str());
    tracing::info!(
        ticket = TicketKey::of(&id).fingerprint(),
        session = %session.fingerprint(),
        "QR login redeemed on the desktop"
    );
    let mut response = redirect(ticket.return_path.as_str());
    add_cookie(&mut response, auth.cookies.session_cookie(&session));
    add_cookie(&mut response, Holder::Desktop.clear(secure(tenant)));
    Ok(response)
}
