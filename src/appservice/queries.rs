//! The homeserver's questions to the appservice: ping, users, room aliases; and our health.

use super::{ApiError, AppState, HomeserverAuth};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ruma::UserId;
use serde_json::{Value, json};

/// `POST /_matrix/app/v1/ping`: the homeserver checks that it can reach us.
pub async fn ping(_auth: HomeserverAuth) -> Json<Value> {
    Json(json!({}))
}

/// `GET /_matrix/app/v1/users/{userId}`: the ghost of a configured coding agent is registered on
/// demand; no other user of the namespace exists (else anyone could create accounts by asking).
pub async fn query_user(
    State(state): State<AppState>,
    _auth: HomeserverAuth,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = UserId::parse(&user_id).map_err(|_| ApiError::not_found("not a user id"))?;
    if !state.namespace.is_ghost(&user) || state.context.agents.by_user(&user).is_none() {
        return Err(ApiError::not_found("not a user of this appservice"));
    }
    state
        .matrix
        .ensure_registered(user.localpart())
        .await
        .map_err(|e| ApiError::internal("registering the ghost user failed", e))?;
    tracing::info!(user = %user, "ghost user registered on query");
    Ok(Json(json!({})))
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`: this appservice provides no room aliases.
pub async fn query_room_alias(_auth: HomeserverAuth, Path(_alias): Path<String>) -> ApiError {
    ApiError::not_found("this appservice provides no room aliases")
}

/// `GET /health`: liveness for supervisors; 503 when the database does not answer.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.store.inbox_len().await {
        Ok(inbox) => (StatusCode::OK, Json(json!({ "status": "ok", "inbox": inbox }))),
        Err(e) => {
            tracing::error!(error = %e, "health check: database failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "error", "database": "unavailable" })))
        }
    }
}
