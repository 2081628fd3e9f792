//! `serve`: wires the store, the homeserver client, the dispatcher and the HTTP server, and
//! stops them in order.

use crate::appservice::{self, AppState};
use crate::backfill;
use crate::config::Config;
use crate::context::Context;
use crate::dispatch;
use crate::jobs;
use crate::matrix::{MatrixClient, MatrixError};
use crate::rag::indexer;
use crate::store::Store;
use crate::work;
use anyhow::Context as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// Runs the appservice on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_addr = config.metrics.listen_addr()?;
    let store = Store::connect(config.database.url.expose()).await.context("opening the database (database.url)")?;
    let matrix = MatrixClient::new(
        &config.homeserver.url,
        config.appservice.as_token.clone(),
        Duration::from_secs(config.homeserver.timeout_secs),
    )?;
    let max_body = config.appservice.max_body_bytes;
    let ctx = Arc::new(Context::new(config, store.clone(), matrix.clone())?);
    let signal = Arc::new(Notify::new());
    let (stop, stopped) = watch::channel(false);
    let dispatcher = tokio::spawn(dispatch::run(ctx.clone(), signal.clone(), stopped.clone()));
    let indexer = tokio::spawn(indexer::run(store.clone(), ctx.rag.clone(), stopped.clone()));
    let jobs = tokio::spawn(jobs::run(ctx.clone(), work::runner(), stopped.clone()));
    let agents = tokio::spawn(crate::agents::run(ctx.clone(), stopped.clone()));
    let metrics = match metrics_addr {
        Some(addr) => Some(serve_metrics(addr, store.clone(), stopped.clone()).await?),
        None => None,
    };
    let backfill = tokio::spawn(backfill::run(ctx.clone(), stopped));
    tokio::spawn(announce(ctx.clone()));
    tokio::spawn(ping_on_recovery(ctx.clone(), stop.subscribe()));

    let state = AppState {
        store: store.clone(),
        matrix,
        namespace: ctx.namespace.clone(),
        hs_token: ctx.config.appservice.hs_token.clone(),
        inbox_signal: signal,
        context: ctx.clone(),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, user = %ctx.namespace.sender(), "appservice listening");
    let limits = crate::listener::Limits {
        read_timeout: Duration::from_secs(ctx.config.appservice.read_timeout_secs),
        max_connections: ctx.config.appservice.max_connections,
    };
    crate::listener::serve(listener, appservice::router(state, max_body), limits, shutdown)
        .await
        .context("HTTP server failed")?;

    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = dispatcher.await;
    let _ = jobs.await;
    let _ = indexer.await;
    let _ = backfill.await;
    let _ = agents.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    store.close().await;
    Ok(())
}

/// Installs the metrics recorder and serves `/metrics` on `addr` (`metrics.listen`) until `stop`.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    store: Store,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let handle = crate::telemetry::install()?;
    let listener =
        TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics.listen): {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        static KINDS: [&str; 3] =
            [jobs::Kind::Chat.as_str(), jobs::Kind::Backend.as_str(), jobs::Kind::Browser.as_str()];
        if let Err(e) = crate::telemetry::serve(handle, store, &KINDS, listener, shutdown).await {
            tracing::error!(error = %e, "the metrics server failed");
        }
    }))
}

/// At start: whether the homeserver can reach us, then the agent's display name. The ping comes
/// first: Synapse retries the transactions it could not deliver at once after a successful ping,
/// instead of after its back-off (2, 4, 8 … s), so messages sent while the agent was down are
/// answered as soon as it is back.
async fn announce(ctx: Arc<Context>) {
    ping(&ctx).await;
    let sender = ctx.namespace.sender();
    if let Err(e) = ctx.matrix.set_display_name(sender, &ctx.config.appservice.display_name).await {
        tracing::warn!(error = %e, "cannot set the agent's display name");
    }
}

async fn ping(ctx: &Context) {
    match ctx.matrix.ping_appservice(&ctx.config.appservice.id).await {
        Ok(rtt) => tracing::info!(rtt_ms = rtt.as_millis() as u64, "the homeserver reaches the agent"),
        Err(e) => tracing::error!(error = %e, "{}", diagnose_ping(&e, &ctx.config)),
    }
}

/// After the homeserver was unreachable (restarted, or the network between us was down), it may
/// be backing off its deliveries to us too: a ping makes it deliver now.
async fn ping_on_recovery(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = ctx.matrix.recovered() => {
                tracing::info!("the homeserver answers again; asking it to deliver what waits");
                ping(&ctx).await;
            }
            _ = stop.changed() => return,
        }
    }
}

/// What an operator should check when the homeserver's ping of the agent fails.
pub fn diagnose_ping(err: &MatrixError, config: &Config) -> String {
    let url = &config.appservice.url;
    match err.errcode() {
        Some("M_CONNECTION_FAILED") => format!(
            "the homeserver cannot connect to the agent at appservice.url = {url}: make it match appservice.listen ({}) as seen from the homeserver",
            config.appservice.listen
        ),
        Some("M_CONNECTION_TIMEOUT") => format!("the homeserver timed out reaching the agent at {url}"),
        Some("M_BAD_STATUS") => {
            "the agent refused the homeserver's ping: hs_token in the registration differs from appservice.hs_token; regenerate the registration and restart the homeserver".into()
        }
        Some("M_URL_NOT_SET") => "the registration has no url: regenerate it with `conclave-agent registration`".into(),
        Some("M_FORBIDDEN" | "M_UNKNOWN_TOKEN") => {
            "the homeserver does not know this as_token: add the registration file to app_service_config_files and restart the homeserver".into()
        }
        Some("M_UNRECOGNIZED") => "the homeserver does not support the appservice ping (Synapse ≥ 1.84 does)".into(),
        _ => format!("cannot ask the homeserver at {} to ping the agent", config.homeserver.url),
    }
}
