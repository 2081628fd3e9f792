//! The HTTP server the homeserver talks to (axum): transactions, ping, user and room queries,
//! health, readiness, the coding agents' API (`/conclave/v1`), and a JSON `M_UNRECOGNIZED` for
//! everything else.

mod agent_api;
mod auth;
mod error;
mod planka;
mod queries;
mod transactions;

pub use auth::HomeserverAuth;
pub use error::ApiError;
pub use transactions::{NotATransaction, ParsedTransaction, parse_transaction};

use crate::context::Context;
use crate::matrix::MatrixClient;
use crate::registration::Namespace;
use crate::secret::Secret;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use std::sync::Arc;
use tokio::sync::Notify;

/// What the HTTP handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub matrix: MatrixClient,
    pub namespace: Arc<Namespace>,
    pub hs_token: Secret,
    /// Woken after new events are stored, so the dispatcher does not wait for its next poll.
    pub inbox_signal: Arc<Notify>,
    /// What the Planka webhook needs: bindings, the Planka client, the agent's identity.
    pub context: Arc<Context>,
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let api = &state.context.config.agent_api;
    let agent_api = agent_api::router(api.max_body_bytes, api.max_upload_bytes);
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(transactions::put_transaction).layer(axum::middleware::from_fn_with_state(
                transactions::BodyBudget::new(max_body_bytes),
                transactions::within_budget,
            )),
        )
        .route("/_matrix/app/v1/ping", post(queries::ping))
        .route("/_matrix/app/v1/users/{user_id}", get(queries::query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(queries::query_room_alias))
        .route("/health", get(queries::health))
        .route("/ready", get(queries::ready))
        .route(
            "/conclave/v1/planka/webhook",
            post(planka::webhook).layer(DefaultBodyLimit::max(planka::MAX_BODY_BYTES)),
        )
        // Before the fallbacks, so a wrong method on these routes is a JSON 405 too.
        .merge(agent_api)
        .fallback(|| async { ApiError::unrecognized(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { ApiError::unrecognized(StatusCode::METHOD_NOT_ALLOWED) })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
