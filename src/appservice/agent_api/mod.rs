//! The coding agents' HTTP API, `/conclave/v1/…` (DESIGN.md lists it): one extractor proves the
//! caller's token (before any body is read) and counts it against the token's rate; bodies are
//! bounded and parsed into typed requests; every failure is a Matrix `{errcode, error}`.

mod handlers;

use super::{ApiError, AppState, auth::bearer};
use crate::agents::AgentError;
use crate::agents::tokens::{self, Verdict};
use crate::ghosts::Agent;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The routes, with their body limits (`agent_api.max_body_bytes`, files `max_upload_bytes`).
pub fn router(max_body_bytes: usize, max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/conclave/v1/whoami", get(handlers::whoami))
        .route("/conclave/v1/messages", post(handlers::post_message))
        .route("/conclave/v1/inbox", get(handlers::inbox))
        .route("/conclave/v1/progress", post(handlers::progress_start))
        .route("/conclave/v1/progress/{id}", put(handlers::progress_update))
        .route("/conclave/v1/files", post(handlers::post_file).layer(DefaultBodyLimit::max(max_upload_bytes)))
        .route("/conclave/v1/tasks", post(handlers::task_create))
        .route("/conclave/v1/tasks/{card}/comments", post(handlers::task_comment))
        .route("/conclave/v1/tasks/{card}/move", post(handlers::task_move))
        .route("/conclave/v1/search", get(handlers::search))
        .route("/conclave/v1/kb/search", get(handlers::kb_search))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

/// The agent a valid token belongs to. Extracting it checks the token (constant time) and the
/// token's rate; it is the only way a handler learns who acts, so a token can act only as its own
/// agent's ghost (invariant 10).
pub struct Caller(pub Arc<Agent>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "missing token: send the coding agent's token as Authorization: Bearer …",
            ));
        };
        let ctx = &state.context;
        let verdict = tokens::verify(&ctx.store, &ctx.agents, &token)
            .await
            .map_err(|e| ApiError::internal("checking a token", e))?;
        let Verdict::Valid { agent, token_id } = verdict else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "unknown or revoked token (an operator makes one with `conclave-agent token --agent NAME`)",
            ));
        };
        ctx.agents.check_rate(&token_id).map_err(ApiError::rate_limited)?;
        Ok(Self(agent))
    }
}

/// A JSON body of type `T`: too big → 413 `M_TOO_LARGE`, not JSON → 400 `M_NOT_JSON`, JSON of the
/// wrong shape (unknown or missing fields) → 400 `M_BAD_JSON`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = raw_body(Bytes::from_request(req, state).await)?;
        serde_json::from_slice(&body).map(Self).map_err(|e| {
            let errcode = if e.is_data() { "M_BAD_JSON" } else { "M_NOT_JSON" };
            ApiError::new(StatusCode::BAD_REQUEST, errcode, format!("invalid request body: {e}"))
        })
    }
}

/// A body within its route's limit.
pub fn raw_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| ApiError::body_rejected(&e, "request body too large", "M_NOT_JSON"))
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let message = e.to_string();
        match e {
            AgentError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message),
            AgentError::NotFound(_) => ApiError::not_found(message),
            AgentError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message),
            AgentError::BadState(_) => ApiError::new(StatusCode::CONFLICT, "M_BAD_STATE", message),
            AgentError::Matrix { source, .. } => {
                // The homeserver's own words and address stay in the log.
                tracing::warn!(error = %source, "{message}");
                ApiError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
            }
            AgentError::Planka(source) => {
                tracing::warn!(error = %source, "Planka call for a coding agent failed");
                let says = if source.is_transient() { "did not answer; try again" } else { "refused the request" };
                ApiError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("Planka {says}"))
            }
            AgentError::Search(detail) => {
                tracing::warn!(error = %detail, "search for a coding agent failed");
                ApiError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "the search index did not answer; try again")
            }
            AgentError::Store(source) => ApiError::internal("the database failed", source),
        }
    }
}
