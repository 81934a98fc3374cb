//! The inbound push pipeline against vector T (protocol §4.8) and forged or malformed pushes.

use super::*;
use crate::secret::SecretString;

const TOKEN: &str = "component_token_demo";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx0123456789abcdef";

const T_ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDJmnSR//tju2IFzBQF46csucAg6oB9fAMX8es3mLntsPeTbxOVh1UvgoqkOG+rb9TVKJ4phNF/vLljKESZIbroo6a6j3FnXXf6KuXcuET0rYOKqBrMuTLjSWYD7CNPrTm7hAhYHIMVtOnNHmVjD2Je+JVpn8cT5jLGp4JqXiAXtyCOMR4SHE7uWlV6rL1jopZ+d5hbmDJ0Yan1wfIjFPZQvy1Rgb3zizYElaTC9KOY++r+hhvrSVvHadYApIXreUGXMyGtFZyKZl3kMmp7RhSXZCbV2rTz3qcQReUhwARJpBoKC8RdCNEX2DTAS3AOukiEpryg9fFEWLZ3aURGyPtqSMj05QLoiwJeOOzvei2fiZkrP4v0MIOyFqRXV+ZjW8s4ex1cOJrbtp+e+TXM5ZJME=";
const T_MSG: &str = "<xml><AppId><![CDATA[wx0123456789abcdef]]></AppId>\n<CreateTime>1700000000</CreateTime>\n<InfoType><![CDATA[component_verify_ticket]]></InfoType>\n<ComponentVerifyTicket><![CDATA[ticket@@@demo-ticket-value-0001-0123456789]]></ComponentVerifyTicket>\n</xml>";
const T_QUERY: &str = "signature=63c27bef086e5adcc7e3cfb146f4ef04f0850652&timestamp=1700000000&nonce=1234567890&encrypt_type=aes&msg_signature=f3c1c8e5868f4ee0b7dcbb6c083037ae0e1cfcf1";
const T_TICKET: &str = "ticket@@@demo-ticket-value-0001-0123456789";

const U_ENCRYPT: &str = "DpQeJfnf/MGZ/+GTIspwVIE8ydonnRAGLt6kIYRBMz7l1XW2A0JtYaroechyybIvZIGj+x99o1QknyJLmv4MtBtMmb/zCtKttCGUwo1IwHzi6uMTH14QfvMTAQy35+RnV1L4NtLWvrYFHMtI2ku2wDLGzuo0TW3bcnK5iXMuUqvzkjMhApja38t2HHZiBlN82j/QU+7geo7IzT2IbRUr7RxN96+rqw5q8Fm8C0lW5XuZE3fzmPryScTquJMX1aCwNWSHRDs9jWwX3PPJlnoT29CRbSjlT5HjvxdbLOBzafJnpOkkzoa2zG9ANpvdVV5N9QwSqnSCfh6PHbPFyocaTw==";
const U_QUERY: &str = "timestamp=1700000600&nonce=987654321&encrypt_type=aes&msg_signature=e771e23ea2718ee4af8488bad09deb89abcb63b5";

fn crypt() -> MsgCrypt {
    MsgCrypt::new(
        &SecretString::new(TOKEN),
        &SecretString::new(KEY),
        ComponentAppId::new(APPID),
    )
    .unwrap()
}

fn envelope(app_id: &str, encrypt: &str) -> String {
    format!(
        "<xml>\n    <AppId><![CDATA[{app_id}]]></AppId>\n    <Encrypt><![CDATA[{encrypt}]]></Encrypt>\n</xml>"
    )
}

fn query(q: &str) -> PushQuery {
    PushQuery::from_query(q).unwrap()
}

/// Encrypts and signs `msg` like WeChat and runs it through `open_push`.
fn open_sealed(msg: &str) -> Result<PushEvent, PushError> {
    let c = crypt();
    let (q, body) = seal_push(&c, msg, "1700000123", "42");
    open_push(&c, &query(&q), body.as_bytes())
}

fn ticket_event() -> PushEvent {
    PushEvent::ComponentVerifyTicket {
        app_id: ComponentAppId::new(APPID),
        create_time: 1_700_000_000,
        ticket: VerifyTicket::new(T_TICKET),
    }
}

// ---------------------------------------------------------------------------------------------
// Vector T end to end

#[test]
fn vector_t_ticket_push_end_to_end() {
    let body = envelope(APPID, T_ENCRYPT);
    let event = open_push(&crypt(), &query(T_QUERY), body.as_bytes()).unwrap();
    assert_eq!(event, ticket_event());
    let PushEvent::ComponentVerifyTicket { ticket, .. } = event else {
        unreachable!()
    };
    assert_eq!(ticket.expose_secret(), T_TICKET);
}

#[test]
fn vector_t_is_reproduced_by_the_outbound_side() {
    let c = crypt();
    let xml = ticket_event_xml(
        &ComponentAppId::new(APPID),
        1_700_000_000,
        &VerifyTicket::new(T_TICKET),
    );
    assert_eq!(xml, T_MSG);
    let (q, body) =
        seal_push_with_random(&c, &xml, "1700000000", "1234567890", b"0123456789abcdef");
    assert_eq!(q, T_QUERY);
    assert_eq!(body, envelope(APPID, T_ENCRYPT));
}

#[test]
fn vector_t_unauthorized_push() {
    let body = envelope(APPID, U_ENCRYPT);
    let event = open_push(&crypt(), &query(U_QUERY), body.as_bytes()).unwrap();
    assert_eq!(
        event,
        PushEvent::Unauthorized {
            app_id: ComponentAppId::new(APPID),
            authorizer_appid: AuthorizerAppId::new("wxfedcba9876543210"),
            create_time: 1_700_000_600,
        }
    );
}

#[test]
fn seal_then_open_round_trip() {
    let c = crypt();
    let ticket = VerifyTicket::new("ticket@@@fresh]]>value");
    let xml = ticket_event_xml(c.appid(), 1_700_001_234, &ticket);
    let (q, body) = seal_push(&c, &xml, "1700001234", "777");
    let parsed = query(&q);
    assert_eq!(parsed.timestamp, "1700001234");
    assert_eq!(parsed.nonce, "777");
    assert_eq!(parsed.encrypt_type.as_deref(), Some("aes"));
    assert_eq!(parsed.signature, Some(c.sign_plain("1700001234", "777")));
    let event = open_push(&c, &parsed, body.as_bytes()).unwrap();
    assert_eq!(
        event,
        PushEvent::ComponentVerifyTicket {
            app_id: c.appid().clone(),
            create_time: 1_700_001_234,
            ticket,
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Message shapes

#[test]
fn plain_text_ticket_message_without_cdata() {
    let xml = format!(
        "<xml>\n<AppId>{APPID}</AppId>\n<CreateTime>1413192605</CreateTime>\n<InfoType>component_verify_ticket</InfoType>\n<ComponentVerifyTicket>some_verify_ticket</ComponentVerifyTicket>\n</xml>"
    );
    let expected = PushEvent::ComponentVerifyTicket {
        app_id: ComponentAppId::new(APPID),
        create_time: 1_413_192_605,
        ticket: VerifyTicket::new("some_verify_ticket"),
    };
    assert_eq!(parse_event(&xml).unwrap(), expected);
    assert_eq!(open_sealed(&xml).unwrap(), expected);
}

#[test]
fn authorized_and_updateauthorized_with_their_extra_fields() {
    let app_id = ComponentAppId::new(APPID);
    let authorizer_appid = AuthorizerAppId::new("wxaaaabbbbccccdddd");
    let create_time = 1_413_192_760;
    let grant = AuthorizationGrant {
        authorization_code: Some(AuthorizerCode::new("queryauthcode@@@abc")),
        code_expired_time: Some(1_413_196_360),
        pre_auth_code: Some(PreAuthCode::new("preauthcode@@@xyz")),
    };
    let cases = [
        (
            "authorized",
            PushEvent::Authorized {
                app_id: app_id.clone(),
                authorizer_appid: authorizer_appid.clone(),
                create_time,
                grant: grant.clone(),
            },
        ),
        (
            "updateauthorized",
            PushEvent::UpdateAuthorized {
                app_id,
                authorizer_appid,
                create_time,
                grant,
            },
        ),
    ];
    for (info_type, expected) in cases {
        let xml = format!(
            "<xml><AppId><![CDATA[{APPID}]]></AppId>\n<CreateTime>1413192760</CreateTime>\n<InfoType><![CDATA[{info_type}]]></InfoType>\n<AuthorizerAppid><![CDATA[wxaaaabbbbccccdddd]]></AuthorizerAppid>\n<AuthorizationCode><![CDATA[queryauthcode@@@abc]]></AuthorizationCode>\n<AuthorizationCodeExpiredTime>1413196360</AuthorizationCodeExpiredTime>\n<PreAuthCode><![CDATA[preauthcode@@@xyz]]></PreAuthCode>\n</xml>"
        );
        assert_eq!(open_sealed(&xml).unwrap(), expected, "{info_type}");
    }
}

#[test]
fn unknown_info_type_is_accepted_as_other() {
    let xml = format!(
        "<xml><AppId><![CDATA[{APPID}]]></AppId>\n<CreateTime>1535442403</CreateTime>\n<InfoType><![CDATA[notify_third_fasteregister]]></InfoType>\n<appid>wxbf8b6ad2a4f0b4b2</appid>\n<status>0</status>\n<auth_code>xxxxx</auth_code>\n<msg>OK</msg>\n<info>\n<name><![CDATA[company name]]></name>\n<code><![CDATA[1234]]></code>\n</info>\n</xml>"
    );
    let expected = PushEvent::Other {
        info_type: "notify_third_fasteregister".to_owned(),
    };
    assert_eq!(parse_event(&xml).unwrap(), expected);
    assert_eq!(open_sealed(&xml).unwrap(), expected);
}

#[test]
fn required_fields() {
    let cases = [
        (
            "<xml><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid>wx1</AuthorizerAppid></xml>",
            "AppId",
        ),
        (
            "<xml><AppId>wx</AppId><CreateTime>1</CreateTime></xml>",
            "InfoType",
        ),
        (
            "<xml><AppId>wx</AppId><CreateTime>1</CreateTime><InfoType></InfoType></xml>",
            "InfoType",
        ),
        (
            "<xml><AppId>wx</AppId><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>t</ComponentVerifyTicket></xml>",
            "CreateTime",
        ),
        (
            "<xml><AppId>wx</AppId><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType></xml>",
            "ComponentVerifyTicket",
        ),
        (
            "<xml><AppId>wx</AppId><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket><![CDATA[]]></ComponentVerifyTicket></xml>",
            "ComponentVerifyTicket",
        ),
        (
            "<xml><AppId>wx</AppId><CreateTime>1</CreateTime><InfoType>unauthorized</InfoType></xml>",
            "AuthorizerAppid",
        ),
        (
            "<xml><AppId/><CreateTime>1</CreateTime><InfoType>x</InfoType></xml>",
            "AppId",
        ),
    ];
    for (xml, field) in cases {
        assert_eq!(parse_event(xml), Err(EventError::Missing(field)), "{xml}");
    }
    assert_eq!(
        parse_event(
            "<xml><AppId>wx</AppId><CreateTime>soon</CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid>wx1</AuthorizerAppid></xml>"
        ),
        Err(EventError::Xml)
    );
}

// ---------------------------------------------------------------------------------------------
// Query parsing

#[test]
fn query_parsing_decodes_and_requires() {
    let q = query("nonce=a+b%2Bc&timestamp=1&msg_signature=ff&openid=o1&signature=00");
    assert_eq!(q.nonce, "a b+c");
    assert_eq!(q.timestamp, "1");
    assert_eq!(q.msg_signature, "ff");
    assert_eq!(q.signature.as_deref(), Some("00"));
    assert_eq!(q.encrypt_type, None);
    for (q, name) in [
        ("nonce=1&msg_signature=ff", "timestamp"),
        ("timestamp=1&msg_signature=ff", "nonce"),
        ("timestamp=1&nonce=2", "msg_signature"),
        ("timestamp=&nonce=2&msg_signature=ff", "timestamp"),
        ("", "timestamp"),
    ] {
        assert_eq!(
            PushQuery::from_query(q),
            Err(EventError::Missing(name)),
            "{q}"
        );
    }
    assert_eq!(
        PushQuery::from_query("timestamp=1&nonce=2&msg_signature=ff&msg_signature=ee"),
        Err(EventError::Duplicate("msg_signature"))
    );
}

#[test]
fn non_aes_encrypt_type_is_refused() {
    let body = envelope(APPID, T_ENCRYPT);
    let q = query(&T_QUERY.replace("encrypt_type=aes", "encrypt_type=raw"));
    assert_eq!(
        open_push(&crypt(), &q, body.as_bytes()),
        Err(PushError::Event(EventError::UnsupportedEncryptType))
    );
}

// ---------------------------------------------------------------------------------------------
// Forged and malformed pushes

#[test]
fn forged_signature_is_refused() {
    let c = crypt();
    let body = envelope(APPID, T_ENCRYPT);
    let forged = query(&T_QUERY.replace("f3c1c8e5", "f3c1c8e6"));
    assert_eq!(
        open_push(&c, &forged, body.as_bytes()),
        Err(PushError::Crypto(CryptoError::InvalidSignature))
    );
    // A correct 3-part `signature` does not help: it does not cover the body.
    let q = query(T_QUERY);
    let other_body = envelope(APPID, U_ENCRYPT);
    assert_eq!(
        open_push(&c, &q, other_body.as_bytes()),
        Err(PushError::Crypto(CryptoError::InvalidSignature))
    );
    // Right key, wrong token: signature fails before anything is decrypted.
    let attacker = MsgCrypt::new(
        &SecretString::new("guessed-token"),
        &SecretString::new(KEY),
        ComponentAppId::new(APPID),
    )
    .unwrap();
    let (q, body) = seal_push(&attacker, T_MSG, "1700000000", "1");
    assert_eq!(
        open_push(&c, &query(&q), body.as_bytes()),
        Err(PushError::Crypto(CryptoError::InvalidSignature))
    );
}

#[test]
fn wrong_outer_appid_is_refused_and_missing_outer_appid_is_allowed() {
    let c = crypt();
    let body = envelope("wx0000000000000000", T_ENCRYPT);
    assert_eq!(
        open_push(&c, &query(T_QUERY), body.as_bytes()),
        Err(PushError::Event(EventError::EnvelopeAppIdMismatch))
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{T_ENCRYPT}]]></Encrypt></xml>"
    );
    assert_eq!(
        open_push(&c, &query(T_QUERY), body.as_bytes()).unwrap(),
        ticket_event()
    );
}

#[test]
fn wrong_inner_appid_is_refused() {
    // Encrypted for our appid (trailing id fine), but the message says it is for another one.
    let xml = ticket_event_xml(
        &ComponentAppId::new("wx9999999999999999"),
        1,
        &VerifyTicket::new("t"),
    );
    assert_eq!(
        open_sealed(&xml),
        Err(PushError::Event(EventError::EventAppIdMismatch))
    );
    let other = "<xml><AppId>wx9999999999999999</AppId><InfoType>whatever</InfoType></xml>";
    assert_eq!(
        open_sealed(other),
        Err(PushError::Event(EventError::EventAppIdMismatch))
    );
}

#[test]
fn trailing_appid_of_another_component_is_refused() {
    let c = crypt();
    let foreign = MsgCrypt::new(
        &SecretString::new(TOKEN),
        &SecretString::new(KEY),
        ComponentAppId::new("wx9999999999999999"),
    )
    .unwrap();
    let encrypt = foreign.encrypt(T_MSG);
    let sig = c.sign("1", "2", &encrypt);
    let q = query(&format!("timestamp=1&nonce=2&msg_signature={sig}"));
    assert_eq!(
        open_push(&c, &q, envelope(APPID, &encrypt).as_bytes()),
        Err(PushError::Crypto(CryptoError::AppIdMismatch))
    );
}

#[test]
fn doctype_and_entities_are_refused() {
    let xxe = "<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><xml><AppId>wx0123456789abcdef</AppId><Encrypt>&x;</Encrypt></xml>";
    assert_eq!(parse_envelope(xxe.as_bytes()), Err(EventError::DocType));
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><xml><Encrypt>&lol2;</Encrypt></xml>";
    assert_eq!(parse_envelope(bomb.as_bytes()), Err(EventError::DocType));
    // Inside the encrypted message too.
    let inner = format!(
        "<!DOCTYPE xml [<!ENTITY t \"injected\">]><xml><AppId>{APPID}</AppId><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>&t;</ComponentVerifyTicket></xml>"
    );
    assert_eq!(parse_event(&inner), Err(EventError::DocType));
    assert_eq!(
        open_sealed(&inner),
        Err(PushError::Event(EventError::DocType))
    );
    // An undeclared entity is not expanded either.
    let undeclared = format!(
        "<xml><AppId>{APPID}</AppId><CreateTime>1</CreateTime><InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>&t;</ComponentVerifyTicket></xml>"
    );
    assert_eq!(parse_event(&undeclared), Err(EventError::Xml));
}

#[test]
fn oversize_bodies_are_refused_before_parsing() {
    let c = crypt();
    // Not even XML: the size check comes first.
    let huge = vec![b'<'; MAX_PUSH_BODY + 1];
    assert_eq!(
        parse_envelope(&huge),
        Err(EventError::TooLarge {
            limit: MAX_PUSH_BODY
        })
    );
    assert_eq!(
        open_push(&c, &query(T_QUERY), &huge),
        Err(PushError::Event(EventError::TooLarge {
            limit: MAX_PUSH_BODY
        }))
    );
    // A valid push padded to exactly the limit is still accepted; one byte more is not.
    let mut body = envelope(APPID, T_ENCRYPT);
    body.push_str(&" ".repeat(MAX_PUSH_BODY - body.len()));
    assert_eq!(body.len(), MAX_PUSH_BODY);
    assert_eq!(
        open_push(&c, &query(T_QUERY), body.as_bytes()).unwrap(),
        ticket_event()
    );
    body.push(' ');
    assert_eq!(
        open_push(&c, &query(T_QUERY), body.as_bytes()),
        Err(PushError::Event(EventError::TooLarge {
            limit: MAX_PUSH_BODY
        }))
    );
}

#[test]
fn garbled_envelopes_are_typed_errors() {
    let cases: [&[u8]; 12] = [
        b"",
        b"success",
        b"<xml>",
        b"<xml><Encrypt>abc</Encrypt>",
        b"<xml><Encrypt>abc</Encrypt></wrong>",
        b"<root><Encrypt>abc</Encrypt></root>",
        b"<xml><Encrypt>abc</Encrypt></xml><xml><Encrypt>def</Encrypt></xml>",
        b"<xml><Encrypt>abc</Encrypt></xml>trailing",
        b"<xml><Encrypt>abc</Encrypt><Encrypt>def</Encrypt></xml>",
        b"<xml><Encrypt><a>nested</a></Encrypt></xml>",
        b"<<<>>>",
        b"{\"Encrypt\":\"abc\"}",
    ];
    for body in cases {
        assert_eq!(
            parse_envelope(body),
            Err(EventError::Xml),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(
        parse_envelope(b"<xml><AppId>wx</AppId></xml>"),
        Err(EventError::Missing("Encrypt"))
    );
    assert_eq!(
        parse_envelope(b"<xml><Encrypt></Encrypt></xml>"),
        Err(EventError::Missing("Encrypt"))
    );
    assert_eq!(
        parse_envelope(b"<xml><Encrypt>\xff\xfe</Encrypt></xml>"),
        Err(EventError::NotUtf8)
    );
    // The decrypted message can be garbled too (signed and encrypted correctly).
    assert_eq!(
        open_sealed("not xml at all"),
        Err(PushError::Event(EventError::Xml))
    );
    assert_eq!(
        open_sealed("<xml><AppId>"),
        Err(PushError::Event(EventError::Xml))
    );
}

#[test]
fn envelope_fields_are_taken_verbatim() {
    let env = parse_envelope(envelope(APPID, T_ENCRYPT).as_bytes()).unwrap();
    assert_eq!(env.app_id.as_deref(), Some(APPID));
    assert_eq!(env.encrypt, T_ENCRYPT);
    // Compatible mode: plaintext fields next to Encrypt are ignored.
    let env = parse_envelope(b"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><MsgId>1</MsgId><Encrypt><![CDATA[abc]]></Encrypt></xml>").unwrap();
    assert_eq!(
        env,
        Envelope {
            app_id: None,
            encrypt: "abc".to_owned()
        }
    );
}

#[test]
fn errors_and_events_do_not_leak_the_ticket() {
    let event = ticket_event();
    assert!(!format!("{event:?}").contains("demo-ticket-value"));
    let err = PushError::from(EventError::Missing("ComponentVerifyTicket"));
    assert_eq!(err.to_string(), "missing or empty `ComponentVerifyTicket`");
}

#[test]
fn cdata_cannot_be_closed_early() {
    assert_eq!(cdata("a]]>b"), "<![CDATA[a]]]]><![CDATA[>b]]>");
    let xml = ticket_event_xml(
        &ComponentAppId::new(APPID),
        5,
        &VerifyTicket::new("x]]></ComponentVerifyTicket><AppId>evil</AppId>"),
    );
    let PushEvent::ComponentVerifyTicket { ticket, .. } = parse_event(&xml).unwrap() else {
        panic!("not a ticket event");
    };
    assert_eq!(
        ticket.expose_secret(),
        "x]]></ComponentVerifyTicket><AppId>evil</AppId>"
    );
}
