//! Coding agents in the rooms: each `[agents.<name>]` is a ghost user `@<ghost_prefix><name>` that
//! the agent's token acts as — only as that ghost and only in the rooms its `rooms` globs allow
//! (invariant 10).
//!
//! - [`tokens`]: bearer tokens (only hashes stored) and `conclave-agent token`.
//! - [`rooms`]: room ids and aliases, and which rooms an agent may use.
//! - [`membership`]: the ghosts' registration, names and invites.
//! - [`inbox`]: what people say to a ghost, kept for its agent to read (long-polled).
//! - [`send`]: messages and files as the ghost; [`tasks`]: Planka cards; [`progress`]: one
//!   status message edited in place.
//! - [`cli`]: the commands the coding agents run (`post`, `inbox`, …), an HTTP client of the API
//!   that `appservice::agent_api` serves.

pub mod cli;
pub mod inbox;
pub mod membership;
pub mod progress;
pub mod rooms;
pub mod send;
pub mod tasks;
pub mod tokens;

pub use crate::ghosts::{Agent, Agents};

use crate::context::Context;
use crate::matrix::MatrixError;
use crate::planka::PlankaError;
use crate::store::{StoreError, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long the ghosts' messages (for replies to them) and `txn` records are remembered.
const MEMORY_MS: i64 = 30 * 24 * 3600 * 1000;

/// The coding agents' background work until `shutdown`: their ghosts set up at start, and old
/// records pruned hourly.
pub async fn run(ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    if ctx.agents.is_empty() {
        return;
    }
    tokio::select! {
        () = async { membership::announce(&ctx).await; progress::finish_owed(&ctx).await } => {}
        _ = shutdown.changed() => return,
    }
    let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = hourly.tick() => match ctx.store.agent_prune_before(now_ms() - MEMORY_MS).await {
                Ok(n) if n > 0 => tracing::info!(pruned = n, "forgot old coding-agent sends"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune old coding-agent sends"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Why an agent's request was not done; the API turns each into its status and errcode.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// 403 `M_FORBIDDEN`: a room (or card) the agent may not use.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `M_NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// 400 `M_INVALID_PARAM`: a value that cannot be right.
    #[error("{0}")]
    Invalid(String),
    /// 409 `M_BAD_STATE`: right, but not now (a finished progress message).
    #[error("{0}")]
    BadState(String),
    /// 502: the homeserver refused or failed; the message says what was being done.
    #[error("{what}: the homeserver {}", if .source.is_transient() { "did not answer; try again" } else { "refused it" })]
    Matrix { what: &'static str, source: MatrixError },
    /// 502: Planka refused or failed.
    #[error("Planka: {0}")]
    Planka(#[from] PlankaError),
    /// 502: the search backend failed.
    #[error("search failed: {0}")]
    Search(String),
    /// 500: the database failed (details in the log).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AgentError {
    pub fn matrix(what: &'static str) -> impl FnOnce(MatrixError) -> Self {
        move |source| Self::Matrix { what, source }
    }
}
