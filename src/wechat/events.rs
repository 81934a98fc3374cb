//! Pushes to the platform's authorization event URL (授权事件接收URL), protocol §2 and §4.5.
//!
//! WeChat POSTs an outer XML envelope (`<xml><AppId/><Encrypt/></xml>`) with the signatures in the
//! query string. [`open_push`] runs the whole inbound pipeline — size bound, envelope, outer appid,
//! `msg_signature`, decryption, inner XML, inner appid — and yields a typed [`PushEvent`]. Nothing
//! from a push is trusted before its `msg_signature` has been verified; XML with a DOCTYPE (and so
//! any entity declaration) is refused before it reaches the deserializer.
//!
//! [`seal_push`] is the outbound direction, used by the simulated WeChat and by tests.

use quick_xml::{Reader, events::Event};
use serde::Deserialize;

use crate::wechat::{
    AuthorizerAppId, AuthorizerCode, ComponentAppId, PreAuthCode, VerifyTicket,
    crypto::{CryptoError, MsgCrypt},
};

/// Largest push body accepted (real pushes are under 2 KB); larger bodies are refused unparsed.
pub const MAX_PUSH_BODY: usize = 64 * 1024;

/// The `InfoType` of a ticket push.
const INFO_TICKET: &str = "component_verify_ticket";
/// The `InfoType` of a successful authorization by an official account.
const INFO_AUTHORIZED: &str = "authorized";
/// The `InfoType` of an authorization update.
const INFO_UPDATE_AUTHORIZED: &str = "updateauthorized";
/// The `InfoType` of a revoked authorization.
const INFO_UNAUTHORIZED: &str = "unauthorized";

/// Why a push's query, envelope or decrypted message was refused.
///
/// Variants name the field or the rule, never a value from the request: a push may carry a
/// ticket, and a forged one carries whatever an attacker chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The body is larger than [`MAX_PUSH_BODY`].
    #[error("push body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("push body is not UTF-8")]
    NotUtf8,
    /// The XML contains a DOCTYPE (entity declarations, XXE).
    #[error("XML with a DOCTYPE is refused")]
    DocType,
    /// The XML is malformed, its root is not `<xml>`, or a field has the wrong type.
    #[error("malformed push XML")]
    Xml,
    /// A required query parameter or XML element is missing or empty.
    #[error("missing or empty `{0}`")]
    Missing(&'static str),
    /// A query parameter appears more than once.
    #[error("duplicate query parameter `{0}`")]
    Duplicate(&'static str),
    /// `encrypt_type` is present and not `aes`.
    #[error("unsupported encrypt_type (only `aes` is accepted)")]
    UnsupportedEncryptType,
    /// The envelope's `AppId` is not the configured component appid.
    #[error("push envelope is addressed to another component appid")]
    EnvelopeAppIdMismatch,
    /// The decrypted message's `AppId` is not the configured component appid.
    #[error("push message is addressed to another component appid")]
    EventAppIdMismatch,
}

/// Why [`open_push`] refused a push: a structural problem or a crypto failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Query, envelope or message structure was refused.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Signature verification or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The signature parameters of a push's query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushQuery {
    /// Unix seconds as sent by WeChat (opaque; signed as is).
    pub timestamp: String,
    /// Random nonce as sent (opaque; signed as is).
    pub nonce: String,
    /// SHA-1 over `(token, timestamp, nonce, Encrypt)`: the signature that is verified.
    pub msg_signature: String,
    /// `aes` on encrypted pushes.
    pub encrypt_type: Option<String>,
    /// The 3-part signature, which does not cover the body and is therefore not relied on.
    pub signature: Option<String>,
}

impl PushQuery {
    /// Parses the raw query string (without `?`), decoding `+` and `%XX` as forms do.
    ///
    /// Unknown parameters (e.g. `openid`) are ignored; a known one given twice is refused rather
    /// than guessing which one was signed.
    ///
    /// # Errors
    /// [`EventError::Missing`] if `timestamp`, `nonce` or `msg_signature` is missing or empty;
    /// [`EventError::Duplicate`] if a known parameter repeats.
    pub fn from_query(query: &str) -> Result<Self, EventError> {
        let mut timestamp = None;
        let mut nonce = None;
        let mut msg_signature = None;
        let mut encrypt_type = None;
        let mut signature = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let (slot, name) = match name.as_ref() {
                "timestamp" => (&mut timestamp, "timestamp"),
                "nonce" => (&mut nonce, "nonce"),
                "msg_signature" => (&mut msg_signature, "msg_signature"),
                "encrypt_type" => (&mut encrypt_type, "encrypt_type"),
                "signature" => (&mut signature, "signature"),
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(EventError::Duplicate(name));
            }
        }
        let required = |value: Option<String>, name| {
            value
                .filter(|v| !v.is_empty())
                .ok_or(EventError::Missing(name))
        };
        Ok(Self {
            timestamp: required(timestamp, "timestamp")?,
            nonce: required(nonce, "nonce")?,
            msg_signature: required(msg_signature, "msg_signature")?,
            encrypt_type,
            signature,
        })
    }
}

/// The outer XML of a push: who it is for and the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The outer `AppId` (component appid), absent on message pushes that use `ToUserName`.
    pub app_id: Option<String>,
    /// The base64 ciphertext, exactly as in the XML (signed as is).
    pub encrypt: String,
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "AppId")]
    app_id: Option<String>,
    #[serde(rename = "Encrypt")]
    encrypt: Option<String>,
}

/// Parses the outer push XML. Other elements (`ToUserName`, plaintext fields of the
/// "compatible" mode) are ignored.
///
/// # Errors
/// [`EventError::TooLarge`] above [`MAX_PUSH_BODY`], [`EventError::NotUtf8`],
/// [`EventError::DocType`], [`EventError::Xml`], or [`EventError::Missing`] without `Encrypt`.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EventError> {
    if body.len() > MAX_PUSH_BODY {
        return Err(EventError::TooLarge {
            limit: MAX_PUSH_BODY,
        });
    }
    let xml = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
    let raw: RawEnvelope = deserialize_checked(xml)?;
    let encrypt = raw
        .encrypt
        .filter(|e| !e.is_empty())
        .ok_or(EventError::Missing("Encrypt"))?;
    Ok(Envelope {
        app_id: raw.app_id,
        encrypt,
    })
}

/// A decrypted push, by `InfoType`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// The ticket WeChat pushes every ten minutes; needed to obtain the component access token.
    ComponentVerifyTicket {
        /// The component appid the push is for.
        app_id: ComponentAppId,
        /// `CreateTime`, Unix seconds.
        create_time: i64,
        /// The new ticket.
        ticket: VerifyTicket,
    },
    /// An official account authorized the platform.
    Authorized {
        /// The component appid the push is for.
        app_id: ComponentAppId,
        /// The official account that authorized us.
        authorizer_appid: AuthorizerAppId,
        /// `CreateTime`, Unix seconds.
        create_time: i64,
        /// The grant details of the authorization (code, expiry, pre-auth code).
        grant: AuthorizationGrant,
    },
    /// An official account changed the permissions it grants the platform.
    UpdateAuthorized {
        /// The component appid the push is for.
        app_id: ComponentAppId,
        /// The official account whose authorization changed.
        authorizer_appid: AuthorizerAppId,
        /// `CreateTime`, Unix seconds.
        create_time: i64,
        /// The grant details of the update (code, expiry, pre-auth code).
        grant: AuthorizationGrant,
    },
    /// An official account revoked its authorization: OAuth on its behalf will now fail.
    Unauthorized {
        /// The component appid the push is for.
        app_id: ComponentAppId,
        /// The official account that revoked us.
        authorizer_appid: AuthorizerAppId,
        /// `CreateTime`, Unix seconds.
        create_time: i64,
    },
    /// Any other `InfoType` (mini-program registration, ICP filing…): accepted and ignored.
    Other {
        /// The `InfoType` as sent.
        info_type: String,
    },
}

impl PushEvent {
    /// The push's `InfoType` (as sent, for [`PushEvent::Other`]).
    pub fn info_type(&self) -> &str {
        match self {
            PushEvent::ComponentVerifyTicket { .. } => INFO_TICKET,
            PushEvent::Authorized { .. } => INFO_AUTHORIZED,
            PushEvent::UpdateAuthorized { .. } => INFO_UPDATE_AUTHORIZED,
            PushEvent::Unauthorized { .. } => INFO_UNAUTHORIZED,
            PushEvent::Other { info_type } => info_type,
        }
    }

    /// The official account an authorization change is about (`None` for other pushes).
    pub fn authorizer_appid(&self) -> Option<&AuthorizerAppId> {
        match self {
            PushEvent::Authorized {
                authorizer_appid, ..
            }
            | PushEvent::UpdateAuthorized {
                authorizer_appid, ..
            }
            | PushEvent::Unauthorized {
                authorizer_appid, ..
            } => Some(authorizer_appid),
            PushEvent::ComponentVerifyTicket { .. } | PushEvent::Other { .. } => None,
        }
    }
}

/// What an `authorized` / `updateauthorized` push carries besides the appids (protocol §2.2).
/// The fields are optional: WeChat always sends them, but a push without them is still a valid
/// notification (the permission sets are then looked up with `api_get_authorizer_info`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuthorizationGrant {
    /// `AuthorizationCode`: single use, for `api_query_auth`. Secret.
    pub authorization_code: Option<AuthorizerCode>,
    /// `AuthorizationCodeExpiredTime` as sent (seconds; whether absolute or a duration is not
    /// documented, so it is not interpreted).
    pub code_expired_time: Option<i64>,
    /// `PreAuthCode`: the pre-authorization code the authorization started from. Secret.
    pub pre_auth_code: Option<PreAuthCode>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "AppId")]
    app_id: Option<String>,
    #[serde(rename = "CreateTime")]
    create_time: Option<i64>,
    #[serde(rename = "InfoType")]
    info_type: Option<String>,
    #[serde(rename = "ComponentVerifyTicket")]
    ticket: Option<String>,
    #[serde(rename = "AuthorizerAppid")]
    authorizer_appid: Option<String>,
    #[serde(rename = "AuthorizationCode")]
    authorization_code: Option<String>,
    /// Kept as text: an odd value must not make a genuine push unreadable.
    #[serde(rename = "AuthorizationCodeExpiredTime")]
    code_expired_time: Option<String>,
    #[serde(rename = "PreAuthCode")]
    pre_auth_code: Option<String>,
}

/// Parses a decrypted push message (CDATA or plain text elements), without checking whom it is
/// addressed to (that is [`open_push`]'s job).
///
/// Every push must carry `AppId` and `InfoType`; the known kinds need their own fields too.
///
/// # Errors
/// [`EventError::DocType`], [`EventError::Xml`] (malformed, or `CreateTime` not a number),
/// [`EventError::Missing`] for a required element.
pub fn parse_event(xml: &str) -> Result<PushEvent, EventError> {
    parse_event_with_appid(xml).map(|(_, event)| event)
}

/// [`parse_event`], also returning the message's `AppId` (which [`PushEvent::Other`] does not
/// carry) so that every kind of push can be checked against the component appid.
fn parse_event_with_appid(xml: &str) -> Result<(ComponentAppId, PushEvent), EventError> {
    if xml.len() > MAX_PUSH_BODY {
        return Err(EventError::TooLarge {
            limit: MAX_PUSH_BODY,
        });
    }
    let raw: RawEvent = deserialize_checked(xml)?;
    let app_id = non_empty(raw.app_id, "AppId").map(ComponentAppId::new)?;
    let info_type = non_empty(raw.info_type, "InfoType")?;
    let create_time = raw.create_time.ok_or(EventError::Missing("CreateTime"));
    let authorizer =
        |value: Option<String>| non_empty(value, "AuthorizerAppid").map(AuthorizerAppId::new);
    let grant = AuthorizationGrant {
        authorization_code: raw
            .authorization_code
            .filter(|c| !c.is_empty())
            .map(AuthorizerCode::new),
        code_expired_time: raw
            .code_expired_time
            .and_then(|t| t.trim().parse::<i64>().ok()),
        pre_auth_code: raw
            .pre_auth_code
            .filter(|c| !c.is_empty())
            .map(PreAuthCode::new),
    };
    let event = match info_type.as_str() {
        INFO_TICKET => PushEvent::ComponentVerifyTicket {
            app_id: app_id.clone(),
            create_time: create_time?,
            ticket: non_empty(raw.ticket, "ComponentVerifyTicket").map(VerifyTicket::new)?,
        },
        INFO_AUTHORIZED => PushEvent::Authorized {
            app_id: app_id.clone(),
            authorizer_appid: authorizer(raw.authorizer_appid)?,
            create_time: create_time?,
            grant,
        },
        INFO_UPDATE_AUTHORIZED => PushEvent::UpdateAuthorized {
            app_id: app_id.clone(),
            authorizer_appid: authorizer(raw.authorizer_appid)?,
            create_time: create_time?,
            grant,
        },
        INFO_UNAUTHORIZED => PushEvent::Unauthorized {
            app_id: app_id.clone(),
            authorizer_appid: authorizer(raw.authorizer_appid)?,
            create_time: create_time?,
        },
        _ => PushEvent::Other { info_type },
    };
    Ok((app_id, event))
}

/// Present and not empty, or [`EventError::Missing`].
fn non_empty(value: Option<String>, name: &'static str) -> Result<String, EventError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(EventError::Missing(name))
}

/// Refuses DOCTYPE and a root other than `<xml>` by walking the event stream, then deserializes.
fn deserialize_checked<T: for<'de> Deserialize<'de>>(xml: &str) -> Result<T, EventError> {
    check_xml(xml)?;
    quick_xml::de::from_str(xml).map_err(|_| EventError::Xml)
}

/// Walks the whole document once: well-formed, no DOCTYPE, exactly one root element named `xml`
/// and nothing but whitespace, comments or processing instructions outside it.
fn check_xml(xml: &str) -> Result<(), EventError> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0usize;
    let mut seen_root = false;
    // Every event but `Eof` consumes at least one byte, so this bound never ends a valid document.
    for _ in 0..=xml.len() {
        let event = reader.read_event().map_err(|_| EventError::Xml)?;
        match event {
            Event::DocType(_) => return Err(EventError::DocType),
            Event::Start(ref e) | Event::Empty(ref e) if depth == 0 => {
                if seen_root || e.name().into_inner() != "xml" {
                    return Err(EventError::Xml);
                }
                seen_root = true;
                if matches!(event, Event::Start(_)) {
                    depth = 1;
                }
            }
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.checked_sub(1).ok_or(EventError::Xml)?,
            Event::Text(ref t) if depth == 0 && !t.trim().is_empty() => {
                return Err(EventError::Xml);
            }
            Event::CData(_) | Event::GeneralRef(_) if depth == 0 => return Err(EventError::Xml),
            Event::Eof => {
                return if seen_root && depth == 0 {
                    Ok(())
                } else {
                    Err(EventError::Xml)
                };
            }
            _ => {}
        }
    }
    Err(EventError::Xml)
}

/// Verifies, decrypts and parses one push to the authorization event URL.
///
/// Order (protocol §4.5): size bound → envelope → outer `AppId` (when present) equals the
/// component appid → `msg_signature` → decryption (trailing appid checked) → message XML → the
/// message's `AppId` equals the component appid. Nothing is returned from a push whose signature
/// does not verify.
///
/// # Errors
/// [`PushError::Event`] for structural problems and appid mismatches, [`PushError::Crypto`] for a
/// bad signature or an undecryptable ciphertext.
///
/// ```
/// use wechat_oauth_proxy::secret::SecretString;
/// use wechat_oauth_proxy::wechat::{ComponentAppId, VerifyTicket, crypto::MsgCrypt, events};
///
/// let appid = ComponentAppId::new("wx0123456789abcdef");
/// let crypt = MsgCrypt::new(
///     &SecretString::new("token"),
///     &SecretString::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"),
///     appid.clone(),
/// )?;
/// let xml = events::ticket_event_xml(&appid, 1_700_000_000, &VerifyTicket::new("ticket@@@x"));
/// let (query, body) = events::seal_push(&crypt, &xml, "1700000000", "42");
///
/// let query = events::PushQuery::from_query(&query)?;
/// let event = events::open_push(&crypt, &query, body.as_bytes())?;
/// assert!(matches!(event, events::PushEvent::ComponentVerifyTicket { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open_push(crypt: &MsgCrypt, query: &PushQuery, body: &[u8]) -> Result<PushEvent, PushError> {
    if query.encrypt_type.as_deref().is_some_and(|t| t != "aes") {
        return Err(EventError::UnsupportedEncryptType.into());
    }
    let envelope = parse_envelope(body)?;
    if let Some(app_id) = &envelope.app_id {
        if app_id != crypt.appid().as_str() {
            return Err(EventError::EnvelopeAppIdMismatch.into());
        }
    }
    crypt.verify_msg_signature(
        &query.timestamp,
        &query.nonce,
        &envelope.encrypt,
        &query.msg_signature,
    )?;
    let message = crypt.decrypt(&envelope.encrypt)?;
    let (app_id, event) = parse_event_with_appid(&message)?;
    if &app_id != crypt.appid() {
        return Err(EventError::EventAppIdMismatch.into());
    }
    Ok(event)
}

/// Encrypts and signs a push the way WeChat does, returning `(query string, body XML)`.
///
/// The query carries `signature`, `timestamp`, `nonce`, `encrypt_type=aes` and `msg_signature`;
/// the body is `<xml><AppId/><Encrypt/></xml>`. Used by the simulated WeChat and tests.
pub fn seal_push(
    crypt: &MsgCrypt,
    event_xml: &str,
    timestamp: &str,
    nonce: &str,
) -> (String, String) {
    seal_encrypted(crypt, crypt.encrypt(event_xml), timestamp, nonce)
}

/// [`seal_push`] with a fixed 16-byte random prefix, for reproducible fixtures.
pub fn seal_push_with_random(
    crypt: &MsgCrypt,
    event_xml: &str,
    timestamp: &str,
    nonce: &str,
    random: &[u8; 16],
) -> (String, String) {
    seal_encrypted(
        crypt,
        crypt.encrypt_with_random(event_xml, random),
        timestamp,
        nonce,
    )
}

fn seal_encrypted(
    crypt: &MsgCrypt,
    encrypt: String,
    timestamp: &str,
    nonce: &str,
) -> (String, String) {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("signature", &crypt.sign_plain(timestamp, nonce))
        .append_pair("timestamp", timestamp)
        .append_pair("nonce", nonce)
        .append_pair("encrypt_type", "aes")
        .append_pair("msg_signature", &crypt.sign(timestamp, nonce, &encrypt))
        .finish();
    let body = format!(
        "<xml>\n    <AppId>{}</AppId>\n    <Encrypt>{}</Encrypt>\n</xml>",
        cdata(crypt.appid().as_str()),
        cdata(&encrypt)
    );
    (query, body)
}

/// The plaintext of a ticket push, formatted like WeChat's (CDATA, `\n` between elements).
pub fn ticket_event_xml(
    app_id: &ComponentAppId,
    create_time: i64,
    ticket: &VerifyTicket,
) -> String {
    format!(
        "<xml><AppId>{}</AppId>\n<CreateTime>{create_time}</CreateTime>\n<InfoType>{}</InfoType>\n<ComponentVerifyTicket>{}</ComponentVerifyTicket>\n</xml>",
        cdata(app_id.as_str()),
        cdata(INFO_TICKET),
        cdata(ticket.expose_secret()),
    )
}

/// Which authorization change an [`authorization_event_xml`] push announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationChange {
    /// `authorized`: the account authorized the platform.
    Authorized,
    /// `updateauthorized`: the account changed the permission sets it grants.
    Updated,
    /// `unauthorized`: the account revoked its authorization.
    Revoked,
}

impl AuthorizationChange {
    /// The `InfoType` WeChat sends for it.
    pub fn info_type(self) -> &'static str {
        match self {
            AuthorizationChange::Authorized => INFO_AUTHORIZED,
            AuthorizationChange::Updated => INFO_UPDATE_AUTHORIZED,
            AuthorizationChange::Revoked => INFO_UNAUTHORIZED,
        }
    }
}

/// The plaintext of an authorization-change push, formatted like WeChat's (CDATA, `\n` between
/// elements). The grant's fields are written for `authorized` / `updateauthorized` only;
/// `unauthorized` carries the authorizer appid alone (protocol §2.2).
pub fn authorization_event_xml(
    app_id: &ComponentAppId,
    create_time: i64,
    change: AuthorizationChange,
    authorizer_appid: &AuthorizerAppId,
    grant: &AuthorizationGrant,
) -> String {
    let mut xml = format!(
        "<xml><AppId>{}</AppId>\n<CreateTime>{create_time}</CreateTime>\n<InfoType>{}</InfoType>\n<AuthorizerAppid>{}</AuthorizerAppid>\n",
        cdata(app_id.as_str()),
        cdata(change.info_type()),
        cdata(authorizer_appid.as_str()),
    );
    if change != AuthorizationChange::Revoked {
        if let Some(code) = &grant.authorization_code {
            xml.push_str(&format!(
                "<AuthorizationCode>{}</AuthorizationCode>\n",
                cdata(code.expose_secret())
            ));
        }
        if let Some(expires) = grant.code_expired_time {
            xml.push_str(&format!(
                "<AuthorizationCodeExpiredTime>{expires}</AuthorizationCodeExpiredTime>\n"
            ));
        }
        if let Some(pre) = &grant.pre_auth_code {
            xml.push_str(&format!(
                "<PreAuthCode>{}</PreAuthCode>\n",
                cdata(pre.expose_secret())
            ));
        }
    }
    xml.push_str("</xml>");
    xml
}

/// Wraps text in CDATA; a `]]>` inside is split across two sections so it cannot end it early.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests;
