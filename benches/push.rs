//! Ticket push: verify `msg_signature`, AES-256-CBC decrypt, parse the XML (`open_push`), with
//! the self-generated vector T of the protocol notes (§4.8), plus the sealing side the simulator
//! uses.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::wechat::crypto::MsgCrypt;
use wechat_oauth_proxy::wechat::events::{
    PushEvent, PushQuery, open_push, seal_push_with_random, ticket_event_xml,
};
use wechat_oauth_proxy::wechat::{ComponentAppId, VerifyTicket};

const TOKEN: &str = "component_token_demo";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx0123456789abcdef";
const T_TICKET: &str = "ticket@@@demo-ticket-value-0001-0123456789";
const T_ENCRYPT_HEAD: &str = "Q3stYC6hdFzMh9T8HCvyDJmnSR//tju2";
const T_MSG_SIGNATURE: &str = "f3c1c8e5868f4ee0b7dcbb6c083037ae0e1cfcf1";

fn push(c: &mut Criterion) {
    let appid = ComponentAppId::new(APPID);
    let crypt = MsgCrypt::new(
        &SecretString::new(TOKEN),
        &SecretString::new(KEY),
        appid.clone(),
    )
    .unwrap();
    let xml = ticket_event_xml(&appid, 1_700_000_000, &VerifyTicket::new(T_TICKET));
    let (query, body) = seal_push_with_random(
        &crypt,
        &xml,
        "1700000000",
        "1234567890",
        b"0123456789abcdef",
    );
    // The bench input is vector T exactly, not merely something that round-trips.
    assert!(body.contains(T_ENCRYPT_HEAD), "not vector T");
    assert!(query.contains(T_MSG_SIGNATURE), "not vector T");
    let parsed = PushQuery::from_query(&query).unwrap();
    assert!(matches!(
        open_push(&crypt, &parsed, body.as_bytes()),
        Ok(PushEvent::ComponentVerifyTicket { .. })
    ));

    let mut group = c.benchmark_group("push");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("open_push/vector_t", |b| {
        b.iter(|| open_push(&crypt, black_box(&parsed), black_box(body.as_bytes())).unwrap())
    });
    group.bench_function("query_parse+open_push/vector_t", |b| {
        b.iter(|| {
            let q = PushQuery::from_query(black_box(&query)).unwrap();
            open_push(&crypt, &q, black_box(body.as_bytes())).unwrap()
        })
    });
    group.bench_function("seal_push/vector_t", |b| {
        b.iter(|| {
            seal_push_with_random(
                &crypt,
                black_box(&xml),
                "1700000000",
                "1234567890",
                b"0123456789abcdef",
            )
        })
    });
    group.finish();
}

criterion_group!(benches, push);
criterion_main!(benches);
