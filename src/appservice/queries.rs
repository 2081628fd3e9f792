//! The homeserver's questions to the appservice: ping, users, room aliases; and our health and
//! readiness.

use super::{ApiError, AppState, HomeserverAuth};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ruma::UserId;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long `/ready` waits for each dependency: the healthcheck and the startup waits poll it.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

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

/// `GET /ready`: 200 only when the database and the homeserver answer now; else 503 with the
/// reason. Read by the container's healthcheck, the startup waits and the dashboard. The reason
/// names what is down, never an address or a credential (the details go to the log).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = timed(state.store.ping());
    let homeserver = timed(async { state.matrix.probe().await.map(drop) });
    let ((db, db_ms), (hs, hs_ms)) = tokio::join!(database, homeserver);
    let check = |name: &str, result: &Result<(), String>, elapsed: Duration| {
        if let Err(e) = result {
            tracing::warn!(error = %e, "ready check: the {name} does not answer");
        }
        json!({ "ok": result.is_ok(), "ms": elapsed.as_millis() as u64 })
    };
    let checks = json!({ "database": check("database", &db, db_ms), "homeserver": check("homeserver", &hs, hs_ms) });
    let down: Vec<&str> = [("database", db.is_ok()), ("homeserver", hs.is_ok())]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect();
    if down.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready", "checks": checks })))
    } else {
        let reason = format!("{} not answering", down.join(" and "));
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason, "checks": checks })))
    }
}

/// Runs one readiness probe with the deadline; returns its outcome and how long it took.
async fn timed<E: std::fmt::Display>(
    probe: impl std::future::Future<Output = Result<(), E>>,
) -> (Result<(), String>, Duration) {
    let start = Instant::now();
    let result = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {READY_TIMEOUT:?}")),
    };
    (result, start.elapsed())
}
