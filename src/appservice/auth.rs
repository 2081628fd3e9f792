//! The homeserver authenticates with the hs_token: `Authorization: Bearer`, or the legacy
//! `access_token` query parameter. Compared in constant time.

use super::{ApiError, AppState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Extracting this proves the request came from our homeserver.
pub struct HomeserverAuth;

impl FromRequestParts<AppState> for HomeserverAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).or_else(|| query_token(parts)).ok_or_else(ApiError::unauthorized)?;
        if state.hs_token.matches(&token) { Ok(Self) } else { Err(ApiError::forbidden()) }
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn query_token(parts: &Parts) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}
