//! The Prometheus exporter of the sidecar: installs the recorder (once per process) and serves
//! `GET /metrics` on `metrics.listen`, a listener of its own, never the public one. The library
//! only records through the `metrics` facade (`crate::metrics`); choosing a recorder is the
//! binary's business, so this is the one place that installs one.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppError;
use crate::config::Config;
use crate::metrics::{self as m, names};
use crate::server::{self, RequestBody, ServerSettings};
use crate::session::SessionStore;
use crate::wechat::tenants::Tenants;

/// How often histogram samples are folded in when nobody scrapes (bounds their memory).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's Prometheus handle: the recorder is global, so it is installed once.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The metrics listener; stops when dropped (with `run`).
#[derive(Debug)]
pub(super) struct MetricsServer(tokio::task::JoinHandle<()>);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the exporter when `metrics.listen` is set; `None` otherwise (nothing installed, every
/// recording stays a no-op).
pub(super) async fn start(
    config: &Config,
    tenants: Tenants,
    sessions: Arc<dyn SessionStore>,
) -> Result<Option<MetricsServer>, AppError> {
    let Some(listen) = config.metrics.listen else {
        return Ok(None);
    };
    m::set_tenant_label(config.metrics.tenant_label);
    let handle = HANDLE.get_or_init(install).clone();
    m::record_build_info();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Io {
            context: format!("cannot listen on metrics.listen {listen}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AppError::Io {
        context: "metrics listener address".into(),
        source,
    })?;
    tracing::info!(listen = %local, "metrics served at GET /metrics");
    let scrape = Arc::new(Scrape {
        handle,
        tenants,
        sessions,
    });
    let service = tower::service_fn(move |request: Request<RequestBody>| {
        let scrape = Arc::clone(&scrape);
        async move { Ok::<_, Infallible>(scrape.answer(&request)) }
    });
    let settings = ServerSettings::from(&config.server);
    let upkeep = HANDLE.get().cloned();
    let task = tokio::spawn(async move {
        let serve = server::serve(listener, service, settings, std::future::pending());
        let upkeep = async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                if let Some(handle) = &upkeep {
                    handle.run_upkeep();
                }
            }
        };
        tokio::select! {
            served = serve => if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener stopped");
            },
            () = upkeep => {}
        }
    });
    Ok(Some(MetricsServer(task)))
}

/// Builds the Prometheus recorder (explicit buckets: histograms, not summaries) and installs it
/// as the global recorder. If another recorder was installed first, ours stays empty and a
/// warning says so.
fn install() -> PrometheusHandle {
    let with_buckets = [
        (names::REQUEST_DURATION, m::REQUEST_BUCKETS),
        (names::WECHAT_DURATION, m::WECHAT_BUCKETS),
        (names::LOGIN_DURATION, m::LOGIN_BUCKETS),
    ]
    .into_iter()
    .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
        builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
    });
    let builder = with_buckets.unwrap_or_else(|e| {
        // Only empty bucket lists are refused, and ours are constants.
        tracing::warn!(error = %e, "histogram buckets refused; histograms become summaries");
        PrometheusBuilder::new()
    });
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(e) = ::metrics::set_global_recorder(recorder) {
        tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics stays empty");
    }
    handle
}

/// What one scrape needs.
#[derive(Debug)]
struct Scrape {
    handle: PrometheusHandle,
    tenants: Tenants,
    sessions: Arc<dyn SessionStore>,
}

impl Scrape {
    /// `GET /metrics` (and `HEAD`); 404 for any other path, 405 for any other method.
    fn answer(&self, request: &Request<RequestBody>) -> Response<Full<Bytes>> {
        if request.uri().path() != "/metrics" {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let statuses: Vec<_> = self
            .tenants
            .list()
            .into_iter()
            .map(|(_, record)| record.status)
            .collect();
        m::sample_gauges(&statuses, self.sessions.active_sessions());
        let mut response = Response::new(Full::new(Bytes::from(self.handle.render())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
