//! # conclave-agent
//!
//! A Matrix application service that gives the Conclave workspace its `@agent`.
//!
//! ## Layout (each layer uses only the layers above it; `tests/module_graph.rs` checks there are
//! no cycles)
//! - [`secret`], [`error_text`], [`backoff`], [`access`], [`guard`], [`store`]: secrets that never
//!   print, error chains, retry delays, who may do what, which addresses browsing may reach, and the durable state (SQLite or PostgreSQL through one `sqlx::Any` path).
//! - [`config`], [`registration`], [`prompts`], [`strings`], [`syntax`]: typed configuration, the
//!   user namespace and Synapse registration, the system prompts, every user-facing text, and the
//!   chat command language (pure parse).
//! - Clients, one per backend: [`matrix`] (homeserver), [`llm`] (OpenAI-compatible chat and
//!   embeddings), [`planka`], [`rag`] (Chroma, retrieval, the indexer that feeds it), [`browser`]
//!   (Chromium over CDP behind the address guard, and the guarded HTTP fetcher).
//! - [`probe`]: every backend probed at once under short timeouts (`check`, `!status`).
//! - [`visibility`]: what of a room's history a member may read (the room's history visibility
//!   and their membership over time), for search and the chat context.
//! - [`telemetry`]: the Prometheus metrics (names, bounded labels) and `/metrics`.
//! - [`ghosts`]: the configured coding agents, their ghost users and rooms, and what their API
//!   shares at run time (rate limit, inbox wake-ups).
//! - [`context`], [`handler`], [`progress`], [`jobs`]: what handlers share (clients + policy), their
//!   error type and the one way to reply, a message edited in place, and the durable job queue with
//!   its workers (slow work, off the rooms' lanes).
//! - Features: [`chat`] (when and how the agent answers), [`commands`] (executing commands),
//!   [`backfill`] (reading a room's earlier history into the index), [`browse`] (`!browse`: a page,
//!   its screenshot and an answer from it), [`agents`] (coding agents in the rooms: tokens, inbox,
//!   posts, progress, cards — and the CLI they run).
//! - The lane: [`events`] (one inbox event → its effects: quick replies, or a job), [`dispatch`]
//!   (inbox → per-room ordered handling), [`work`] (which feature runs each kind of job).
//! - [`appservice`] (the HTTP API the homeserver and the coding agents call), [`service`]
//!   (`serve`), [`ops`] (the one-shot CLI operations), [`bootstrap`] (the workspace's rooms from
//!   `rooms.toml`).
//!
//! ## The data path
//! homeserver → `PUT /transactions` → one db transaction (txn id + events) → 200 →
//! dispatcher → room lane (quick reply, or a job written with the event's removal from the inbox)
//! → job workers → status message edited in place → result. Sends carry txn ids derived from the
//! trigger.

pub mod access;
pub mod agents;
pub mod appservice;
pub mod backfill;
pub mod backoff;
pub mod bootstrap;
pub mod browse;
pub mod browser;
pub mod chat;
pub mod commands;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod error_text;
pub mod events;
pub mod ghosts;
pub mod guard;
pub mod handler;
pub mod jobs;
pub mod listener;
pub mod llm;
pub mod matrix;
pub mod ops;
pub mod planka;
pub mod probe;
pub mod progress;
pub mod prompts;
pub mod rag;
pub mod registration;
pub mod secret;
pub mod service;
pub mod store;
pub mod strings;
pub mod syntax;
pub mod telemetry;
pub mod visibility;
pub mod work;

/// Helpers for the unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    /// A loopback port nothing listens on: bound, read back and closed again (no port is assumed
    /// closed on every machine).
    pub fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").port()
    }

    /// A loopback server that accepts connections and reads them but never answers: what a hung
    /// backend looks like to a client. Returns its URL; it lives as long as the test runtime.
    pub async fn silent_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket); // kept open, never written to
            }
        });
        url
    }
}
