//! Prometheus metrics: every name and label the agent records lives here, so the set stays
//! bounded (labels are endpoint names, job kinds, event types, model names and states — never a
//! room id, a user id or a secret). Recording goes through the `metrics` facade, which does
//! nothing until [`install`] sets the recorder: with `metrics.listen` empty nothing is recorded.
//! [`serve`] answers `GET /metrics` on its own listener, the queue gauges read from the database
//! at each scrape.

use crate::store::Store;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

/// Bucket bounds of every `_seconds` histogram: from a fast SQLite commit to a long model answer.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The process's recorder: installed once (a process has one global recorder).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    store: Store,
    /// The job kinds, so each shows a depth (0 too) before it first has a job.
    kinds: &'static [&'static str],
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves; `kinds` are the job kinds.
pub async fn serve(
    handle: PrometheusHandle,
    store: Store,
    kinds: &'static [&'static str],
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without the exporter's own listener, its histograms are drained by us.
    let upkeep = handle.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let router =
        axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(Scrape { handle, store, kinds });
    // The same bounds as the appservice port: a scraper that stalls is disconnected.
    let limits = crate::listener::Limits { read_timeout: Duration::from_secs(30), max_connections: 64 };
    let result = crate::listener::serve(listener, router, limits, shutdown).await;
    upkeep.abort();
    result
}

/// `GET /metrics`: the queue gauges, read now, then everything in Prometheus text format.
async fn metrics(State(scrape): State<Scrape>) -> impl IntoResponse {
    queue_gauges(&scrape.store, scrape.kinds).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], scrape.handle.render())
}

async fn queue_gauges(store: &Store, kinds: &[&'static str]) {
    let read = async {
        gauge!("conclave_inbox_depth").set(store.inbox_len().await? as f64);
        gauge!("conclave_index_backlog").set(store.index_backlog(None).await? as f64);
        gauge!("conclave_dead_letters").set(store.dead_letter_count().await? as f64);
        let depths = store.jobs_depth().await?;
        for &kind in kinds {
            for state in ["queued", "running"] {
                let n = depths.iter().find(|(k, s, _)| k == kind && s == state).map_or(0, |d| d.2);
                gauge!("conclave_jobs_depth", "kind" => kind, "state" => state).set(n as f64);
            }
        }
        Ok::<_, crate::store::StoreError>(())
    };
    if let Err(e) = read.await {
        tracing::warn!(error = %e, "metrics: the queue depths cannot be read");
    }
}

/// A transaction the homeserver pushed, with its timeline events, and how long storing it took.
pub fn transaction_received(events: usize, stored_in: Duration) {
    counter!("conclave_transactions_received_total").increment(1);
    counter!("conclave_events_received_total").increment(events as u64);
    histogram!("conclave_ingest_duration_seconds").record(stored_in.as_secs_f64());
}

/// An inbox event handled (`ok`) or failed, by its type (the few the agent acts on, else `other`).
pub fn event_handled(event_type: &str, ok: bool) {
    let event_type = ["m.room.message", "m.room.member", "m.room.encrypted", "m.room.redaction"]
        .into_iter()
        .find(|t| *t == event_type)
        .unwrap_or("other");
    if ok {
        counter!("conclave_events_handled_total", "type" => event_type).increment(1);
    } else {
        counter!("conclave_events_failed_total", "type" => event_type).increment(1);
    }
}

/// A job of `kind` ran for `took` and ended with `outcome` (`done`, `failed`, `cancelled`, `retry`).
pub fn job_ran(kind: &'static str, outcome: &'static str, took: Duration) {
    histogram!("conclave_job_duration_seconds", "kind" => kind, "outcome" => outcome).record(took.as_secs_f64());
}

/// Tokens one answer used. Models are the configured ones and those the model server lists.
pub fn model_tokens(model: &str, prompt: u64, completion: u64) {
    counter!("conclave_model_tokens_total", "model" => model.to_owned(), "kind" => "prompt").increment(prompt);
    counter!("conclave_model_tokens_total", "model" => model.to_owned(), "kind" => "completion").increment(completion);
}

pub fn model_error(model: &str) {
    counter!("conclave_model_errors_total", "model" => model.to_owned()).increment(1);
}

/// Texts embedded (documents and queries).
pub fn embeddings(n: usize) {
    counter!("conclave_embeddings_total").increment(n as u64);
}

/// One call to `backend` (`chroma`, `planka`).
pub fn backend_call(backend: &'static str, ok: bool) {
    counter!("conclave_backend_calls_total", "backend" => backend).increment(1);
    if !ok {
        counter!("conclave_backend_failures_total", "backend" => backend).increment(1);
    }
}

/// One homeserver API call, by endpoint: the request type's module path in ruma
/// (`message::send_message_event`), a set fixed at compile time.
pub fn homeserver_call<R>(ok: bool) {
    let endpoint = endpoint_name(std::any::type_name::<R>());
    counter!("conclave_homeserver_calls_total", "endpoint" => endpoint).increment(1);
    if !ok {
        counter!("conclave_homeserver_failures_total", "endpoint" => endpoint).increment(1);
    }
}

/// `ruma_client_api::message::send_message_event::v3::Request` → `message::send_message_event`.
fn endpoint_name(type_name: &'static str) -> &'static str {
    let path = type_name.split_once("::").map_or(type_name, |(_, rest)| rest);
    let path = path.strip_suffix("::Request").unwrap_or(path);
    match path.rsplit_once("::") {
        Some((head, version)) if version.starts_with('v') && version[1..].chars().all(|c| c.is_ascii_digit()) => head,
        _ => path,
    }
}

/// A coding agent's run entered `state` (`running`, `done`, `failed`).
pub fn coding_agent_run(state: &'static str) {
    counter!("conclave_coding_agent_runs_total", "state" => state).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_named_by_their_module() {
        let cases = [
            ("versioned", "ruma_client_api::message::send_message_event::v3::Request", "message::send_message_event"),
            (
                "unversioned",
                "ruma_client_api::discovery::get_supported_versions::Request",
                "discovery::get_supported_versions",
            ),
            ("v1", "ruma_client_api::appservice::request_ping::v1::Request", "appservice::request_ping"),
        ];
        for (name, type_name, want) in cases {
            assert_eq!(endpoint_name(type_name), want, "{name}");
        }
    }
}
