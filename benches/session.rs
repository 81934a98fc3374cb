//! Session cookie decode and session lookup in the in-process store at 1 k, 100 k and 1 M
//! sessions.
//!
//! The store is populated once per size (through `SessionStore::create`, as logins do) and
//! dropped before the next size, so at most one million sessions (~0.7 GiB) are alive at a time.
//! Lookups walk the ids in a scrambled order so that the large sizes pay their cache misses.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use wechat_oauth_proxy::Identity;
use wechat_oauth_proxy::secret::SecretString;
use wechat_oauth_proxy::session::{
    CookieCodec, CookieSettings, MemoryStore, SessionId, SessionRecord, SessionSettings,
    SessionStore,
};

const MASTER_SECRET: &str = "bench-only-master-secret-0123456789abcdef";

/// A stride coprime with every size below, so `i * STRIDE % n` visits all ids in a scrambled
/// order.
const STRIDE: usize = 48_271;

fn identity(i: usize) -> Identity {
    wechat_oauth_proxy::sim::synthetic_identity(i)
}

fn cookie_header(codec: &CookieCodec, id: &SessionId, others: bool) -> HeaderMap {
    let pair = support::cookie_pair(&codec.session_cookie(id));
    let value = if others {
        format!("_ga=GA1.2.1234567890.1700000000; lang=zh_CN; {pair}; theme=dark")
    } else {
        pair
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
    headers.insert(header::HOST, HeaderValue::from_static("app.example.com"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
    headers
}

fn cookie(c: &mut Criterion) {
    let codec =
        CookieCodec::new(&SecretString::new(MASTER_SECRET), CookieSettings::default()).unwrap();
    let id = SessionId::generate();
    let alone = cookie_header(&codec, &id, false);
    let among = cookie_header(&codec, &id, true);
    let mut tampered = alone.clone();
    let mut text = tampered
        .get(header::COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // Flip one base64 character of the ciphertext.
    let last = text.pop().unwrap();
    text.push(if last == 'A' { 'B' } else { 'A' });
    tampered.insert(header::COOKIE, HeaderValue::from_str(&text).unwrap());
    assert_eq!(codec.read_session(&alone), Some(id.clone()));
    assert_eq!(codec.read_session(&among), Some(id.clone()));
    assert_eq!(codec.read_session(&tampered), None);

    let mut group = c.benchmark_group("cookie");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("read_session/alone", |b| {
        b.iter(|| codec.read_session(black_box(&alone)))
    });
    group.bench_function("read_session/among_3_others", |b| {
        b.iter(|| codec.read_session(black_box(&among)))
    });
    group.bench_function("read_session/tampered", |b| {
        b.iter(|| codec.read_session(black_box(&tampered)))
    });
    group.bench_function("session_cookie/encode", |b| {
        b.iter(|| codec.session_cookie(black_box(&id)))
    });
    let mut forwarded = among.clone();
    group.bench_function("strip_own_cookies/among_3_others", |b| {
        b.iter(|| {
            forwarded.clone_from(&among);
            codec.strip_own_cookies(black_box(&mut forwarded));
        })
    });
    group.finish();
}

/// Benchmarks `call` on one session id per iteration, walking `ids` `STRIDE` apart.
fn hits(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    ids: &[SessionId],
    call: impl AsyncFn(&SessionId),
) {
    let n = ids.len();
    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
        let mut next = 0usize;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    next = (next + STRIDE) % n;
                    call(black_box(&ids[next])).await;
                }
                start.elapsed()
            })
        })
    });
}

fn store_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("session_store");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1_000usize, 100_000, 1_000_000] {
        let settings = SessionSettings {
            // Room above `n` so that no eviction runs while we measure lookups.
            capacity: (2 * n) as u64,
            ..SessionSettings::default()
        };
        let memory = MemoryStore::new(settings);
        let store: Arc<dyn SessionStore> = Arc::new(memory.clone());
        let started = Instant::now();
        let ids: Vec<SessionId> = rt.block_on(async {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                ids.push(store.create(SessionRecord::new(identity(i))).await.unwrap());
            }
            memory.run_pending_tasks().await;
            ids
        });
        assert_eq!(memory.session_count(), n as u64);
        eprintln!(
            "session_store: populated {n} sessions in {:.2?}",
            started.elapsed()
        );
        let probe = rt.block_on(store.load(&ids[n / 2])).unwrap().unwrap();
        assert_eq!(probe.identity, identity(n / 2));

        hits(&mut group, &rt, "load/hit", &ids, async |id| {
            black_box(store.load(id).await.unwrap());
        });
        hits(&mut group, &rt, "touch/hit", &ids, async |id| {
            black_box(store.touch(id).await.unwrap());
        });
        let unknown = SessionId::generate();
        group.bench_with_input(BenchmarkId::new("load/miss", n), &n, |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(store.load(black_box(&unknown)).await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
        drop(ids);
        drop(store);
        drop(memory);
    }
    group.finish();
}

criterion_group!(benches, cookie, store_lookup);
criterion_main!(benches);
