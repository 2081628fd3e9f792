//! Planka client (v2 REST API, the facts it relies on: docs/planka.md): boards, lists, cards, comments and card
//! members, authenticated with an API key or a password login.
//!
//! Every call has a timeout (invariant 7); keys, passwords and tokens live in [`Secret`]s and
//! never reach logs or `Debug` (invariant 5). Nothing is retried here except one login after a
//! refused token: callers decide what to do with [`PlankaError::is_transient`] errors.

mod error;
mod model;
pub mod replay;
mod tasks;
pub mod webhook;

pub use error::PlankaError;
pub use model::{Board, BoardView, Card, Comment, List, ListKind, POSITION_GAP, Project, ProjectBoards, User};
pub use tasks::Tasks;

use crate::config;
use crate::secret::Secret;
use model::{BoardIncluded, Many, One, ProjectsIncluded, WireBoard, WireCard, WireComment, WireList, WireProject};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OnceCell};

/// How the agent proves who it is; decided once from the config.
#[derive(Debug)]
enum Auth {
    /// `X-Api-Key` (Planka v2): no login, no terms step.
    ApiKey(Secret),
    /// Password login for a JWT, cached; the lock also keeps concurrent calls to one login.
    Password { username: String, password: Secret, token: Mutex<Option<Secret>> },
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base_url: String,
    public_url: String,
    timeout: Duration,
    auth: Auth,
    /// Set once the server is known to be v2.
    is_v2: OnceCell<()>,
}

/// A cheap-to-clone handle on one Planka server.
#[derive(Clone, Debug)]
pub struct PlankaClient {
    inner: Arc<Inner>,
}

impl PlankaClient {
    /// A client for the configured server. Prefers the API key; else logs in with username and
    /// password on first use. Fails when neither is configured.
    pub fn new(config: &config::Planka, timeout: Duration) -> Result<Self, PlankaError> {
        let auth = if !config.api_key.is_empty() {
            Auth::ApiKey(config.api_key.clone())
        } else if !config.username.is_empty() && !config.password.is_empty() {
            Auth::Password {
                username: config.username.clone(),
                password: config.password.clone(),
                token: Mutex::new(None),
            }
        } else {
            return Err(PlankaError::NotConfigured);
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .user_agent(concat!("conclave-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PlankaError::Build(e.to_string()))?;
        let base_url = config.url.trim_end_matches('/').to_owned();
        let public_url = match config.public_url.trim_end_matches('/') {
            "" => base_url.clone(),
            public => public.to_owned(),
        };
        Ok(Self { inner: Arc::new(Inner { http, base_url, public_url, timeout, auth, is_v2: OnceCell::new() }) })
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The link a human opens for a card.
    pub fn card_url(&self, card_id: &str) -> String {
        format!("{}/cards/{card_id}", self.inner.public_url)
    }

    /// The link a human opens for a board.
    pub fn board_url(&self, board_id: &str) -> String {
        format!("{}/boards/{board_id}", self.inner.public_url)
    }

    // ---- Operations ----

    /// The user the agent acts as; also a cheap probe of URL and credentials.
    pub async fn me(&self) -> Result<User, PlankaError> {
        let one: One<User> = self.call(Method::GET, "/api/users/me", None).await?;
        Ok(one.item)
    }

    /// Every project the agent can see, with its boards sorted by position.
    pub async fn projects_with_boards(&self) -> Result<Vec<ProjectBoards>, PlankaError> {
        let many: Many<WireProject, ProjectsIncluded> = self.call(Method::GET, "/api/projects", None).await?;
        let mut boards: Vec<Board> = many.included.boards.into_iter().map(Board::from).collect();
        boards.sort_by(|a, b| a.position.total_cmp(&b.position));
        Ok(many
            .items
            .into_iter()
            .map(|p| {
                let boards = boards.iter().filter(|b| b.project_id == p.id).cloned().collect();
                ProjectBoards { project: p.into(), boards }
            })
            .collect())
    }

    /// A board with its lists (active and closed only, by position), cards and users.
    pub async fn board(&self, board_id: &str) -> Result<BoardView, PlankaError> {
        let path = format!("/api/boards/{}", segment(board_id)?);
        let one: One<WireBoard, BoardIncluded> = self.call(Method::GET, &path, None).await?;
        model::board_view(one.item, one.included)
    }

    /// The board named `"Project/Board"`. An exact match wins; else a single match ignoring case.
    /// Names may themselves contain `/`, so every project/board pair is compared whole.
    pub async fn find_board(&self, path: &str) -> Result<Option<Board>, PlankaError> {
        let wanted = path.trim();
        let projects = self.projects_with_boards().await?;
        let all: Vec<(String, &Board)> = projects
            .iter()
            .flat_map(|p| p.boards.iter().map(move |b| (format!("{}/{}", p.project.name, b.name), b)))
            .collect();
        if let Some((_, board)) = all.iter().find(|(name, _)| name == wanted) {
            return Ok(Some((*board).clone()));
        }
        let mut folded = all.iter().filter(|(name, _)| name.to_lowercase() == wanted.to_lowercase());
        match (folded.next(), folded.next()) {
            (Some((_, board)), None) => Ok(Some((*board).clone())),
            _ => Ok(None),
        }
    }

    /// Creates a card at the end of `list_id`.
    pub async fn create_card(&self, list_id: &str, name: &str, description: Option<&str>) -> Result<Card, PlankaError> {
        let list = self.list(list_id).await?;
        let board = self.board(&list.board_id).await?;
        // `type` is required (400 without it) and so, in practice, is `position` (422).
        let mut body = json!({ "type": "project", "position": board.append_position(list_id), "name": name });
        if let Some(description) = description.filter(|d| !d.is_empty()) {
            body["description"] = json!(description);
        }
        let path = format!("/api/lists/{}/cards", segment(list_id)?);
        let one: One<WireCard> = self.call(Method::POST, &path, Some(body)).await?;
        one.item.into_card()
    }

    pub async fn card(&self, card_id: &str) -> Result<Card, PlankaError> {
        let path = format!("/api/cards/{}", segment(card_id)?);
        let one: One<WireCard> = self.call(Method::GET, &path, None).await?;
        one.item.into_card()
    }

    /// Moves a card to the end of `list_id`, on the same board or another one.
    pub async fn move_card(&self, card_id: &str, list_id: &str) -> Result<Card, PlankaError> {
        let list = self.list(list_id).await?;
        let board = self.board(&list.board_id).await?;
        let position = board.cards.iter().filter(|c| c.list_id == list_id && c.id != card_id).map(|c| c.position);
        let mut body = json!({ "listId": list_id, "position": position.fold(0.0, f64::max) + POSITION_GAP });
        if !board.cards.iter().any(|c| c.id == card_id) {
            // Moving across boards needs the target board too.
            body["boardId"] = json!(list.board_id);
        }
        let path = format!("/api/cards/{}", segment(card_id)?);
        let one: One<WireCard> = self.call(Method::PATCH, &path, Some(body)).await?;
        one.item.into_card()
    }

    pub async fn comment(&self, card_id: &str, text: &str) -> Result<Comment, PlankaError> {
        let path = format!("/api/cards/{}/comments", segment(card_id)?);
        let one: One<WireComment> = self.call(Method::POST, &path, Some(json!({ "text": text }))).await?;
        Ok(one.item.into())
    }

    /// A card's comments, newest first (Planka v2).
    pub async fn comments(&self, card_id: &str) -> Result<Vec<Comment>, PlankaError> {
        let path = format!("/api/cards/{}/comments", segment(card_id)?);
        let many: Many<WireComment> = self.call(Method::GET, &path, None).await?;
        Ok(many.items.into_iter().map(Into::into).collect())
    }

    /// Makes a user a member of a card; one who is a member already is fine (Planka answers 409).
    pub async fn add_card_member(&self, card_id: &str, user_id: &str) -> Result<(), PlankaError> {
        let path = format!("/api/cards/{}/card-memberships", segment(card_id)?);
        match self.call::<Value>(Method::POST, &path, Some(json!({ "userId": user_id }))).await {
            Ok(_) => Ok(()),
            Err(PlankaError::Rejected { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One list; system lists are reported as not found, since no card belongs there by our hand.
    async fn list(&self, list_id: &str) -> Result<List, PlankaError> {
        let path = format!("/api/lists/{}", segment(list_id)?);
        let one: One<WireList> = self.call(Method::GET, &path, None).await?;
        one.item.into_list()?.ok_or_else(|| PlankaError::NotFound {
            status: 404,
            code: "E_NOT_FOUND".into(),
            message: "List not found (it is a system list)".into(),
        })
    }

    // ---- HTTP ----

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    /// One authenticated call with a JSON answer. A password login's token that Planka refuses is
    /// replaced once by a fresh login; a second refusal is reported.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, PlankaError> {
        let result = self.call_once(method, path, body).await;
        crate::telemetry::backend_call("planka", result.is_ok());
        result
    }

    async fn call_once<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, PlankaError> {
        self.ensure_v2().await?;
        let request = || {
            let rb = self.inner.http.request(method.clone(), self.url(path));
            match &body {
                Some(body) => rb.json(body),
                None => rb,
            }
        };
        let bytes = match &self.inner.auth {
            Auth::ApiKey(key) => self.send(request().header("X-Api-Key", key.expose())).await?,
            Auth::Password { token, .. } => {
                let first = self.token(token, None).await?;
                match self.send(request().bearer_auth(first.expose())).await {
                    Err(PlankaError::Unauthorized { .. }) => {
                        tracing::debug!(%path, "Planka refused the token; logging in again");
                        let fresh = self.token(token, Some(&first)).await?;
                        self.send(request().bearer_auth(fresh.expose())).await?
                    }
                    other => other?,
                }
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| PlankaError::Response(format!("{method} {path}: {e}")))
    }

    /// Planka v1 has no `/api/terms` (v2 always has, and answers it without a login); `type` on
    /// lists and cards, missing in v1 too, is checked where they are read.
    async fn ensure_v2(&self) -> Result<(), PlankaError> {
        let probe = || async {
            match self.send(self.inner.http.get(self.url("/api/terms"))).await {
                Ok(_) | Err(PlankaError::Unauthorized { .. } | PlankaError::Forbidden { .. }) => Ok(()),
                Err(PlankaError::NotFound { .. }) => Err(PlankaError::Unsupported(
                    "it has no /api/terms: Planka v1, or planka.url does not point at Planka".into(),
                )),
                Err(e) => Err(e),
            }
        };
        self.inner.is_v2.get_or_try_init(probe).await.map(drop)
    }

    /// The cached token, or a fresh login when there is none or the cached one is `stale`.
    async fn token(&self, cache: &Mutex<Option<Secret>>, stale: Option<&Secret>) -> Result<Secret, PlankaError> {
        let mut cached = cache.lock().await;
        match cached.as_ref() {
            Some(token) if Some(token) != stale => return Ok(token.clone()),
            _ => {}
        }
        *cached = None;
        let token = self.login().await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Password login, through Planka v2's terms step when it asks for it.
    async fn login(&self) -> Result<Secret, PlankaError> {
        let Auth::Password { username, password, .. } = &self.inner.auth else {
            return Err(PlankaError::Build("password login without a password".into()));
        };
        let body = json!({ "emailOrUsername": username, "password": password.expose() });
        let request = self.inner.http.post(self.url("/api/access-tokens")).json(&body);
        let (status, bytes) = self.exchange(request).await?;
        if status.is_success() {
            return jwt(&bytes);
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Step {
            step: Option<String>,
            pending_token: Option<Secret>,
        }
        let pending = match serde_json::from_slice::<Step>(&bytes) {
            Ok(Step { step: Some(step), pending_token: Some(pending) }) if status == 403 && step == "accept-terms" => {
                pending
            }
            _ => return Err(PlankaError::from_response(status.as_u16(), &bytes)),
        };
        tracing::info!("Planka asks the agent's user to accept its terms; accepting them");
        #[derive(serde::Deserialize)]
        struct Terms {
            signature: String,
        }
        let terms: One<Terms> = parse("/api/terms", &self.send(self.inner.http.get(self.url("/api/terms"))).await?)?;
        let body = json!({ "pendingToken": pending.expose(), "signature": terms.item.signature });
        let request = self.inner.http.post(self.url("/api/access-tokens/accept-terms")).json(&body);
        jwt(&self.send(request).await?)
    }

    /// Sends a request; a non-2xx answer becomes the matching error.
    async fn send(&self, request: RequestBuilder) -> Result<Vec<u8>, PlankaError> {
        let (status, bytes) = self.exchange(request).await?;
        if status.is_success() { Ok(bytes) } else { Err(PlankaError::from_response(status.as_u16(), &bytes)) }
    }

    /// Sends a request and reads the whole answer, whatever its status.
    async fn exchange(&self, request: RequestBuilder) -> Result<(StatusCode, Vec<u8>), PlankaError> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e))?.to_vec();
        tracing::debug!(status = status.as_u16(), "Planka answered");
        Ok((status, bytes))
    }

    fn transport_error(&self, e: reqwest::Error) -> PlankaError {
        if e.is_timeout() {
            PlankaError::Timeout(self.inner.timeout)
        } else if e.is_builder() {
            PlankaError::Build(crate::error_text::chain(&e))
        } else {
            PlankaError::Unreachable { url: self.inner.base_url.clone(), reason: crate::error_text::chain(&e) }
        }
    }
}

fn parse<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, PlankaError> {
    serde_json::from_slice(bytes).map_err(|e| PlankaError::Response(format!("{what}: {e}")))
}

/// The `{"item": "<JWT>"}` of a login.
fn jwt(bytes: &[u8]) -> Result<Secret, PlankaError> {
    let one: One<Secret> = parse("access token", bytes)?;
    Ok(one.item)
}

/// An id as one path segment. Ids are digits; anything else (a pasted link, a slash) must not
/// reach another endpoint.
fn segment(id: &str) -> Result<&str, PlankaError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(id)
    } else {
        Err(PlankaError::NotFound { status: 404, code: "E_NOT_FOUND".into(), message: format!("no such id {id:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api_key: &str, username: &str, password: &str) -> config::Planka {
        config::Planka {
            url: "http://127.0.0.1:1337/".into(),
            api_key: Secret::new(api_key),
            username: username.into(),
            password: Secret::new(password),
            ..Default::default()
        }
    }

    #[test]
    fn auth_is_chosen_from_config() {
        let t = Duration::from_secs(5);
        let key = PlankaClient::new(&config("k3y-secret", "bot", "pw-secret"), t).unwrap();
        assert!(matches!(key.inner.auth, Auth::ApiKey(_)));
        let pw = PlankaClient::new(&config("", "bot", "pw-secret"), t).unwrap();
        assert!(matches!(pw.inner.auth, Auth::Password { .. }));
        for (k, u, p) in [("", "", ""), ("", "bot", ""), ("", "", "pw")] {
            assert!(matches!(PlankaClient::new(&config(k, u, p), t), Err(PlankaError::NotConfigured)));
        }
        let debug = format!("{key:?}{pw:?}");
        assert!(!debug.contains("k3y-secret") && !debug.contains("pw-secret"), "{debug}");
    }

    #[test]
    fn links_use_the_public_url_else_the_url() {
        let t = Duration::from_secs(5);
        let mut c = config("k", "", "");
        assert_eq!(PlankaClient::new(&c, t).unwrap().card_url("17"), "http://127.0.0.1:1337/cards/17");
        c.public_url = "https://planka.example.org/".into();
        let client = PlankaClient::new(&c, t).unwrap();
        assert_eq!(client.card_url("17"), "https://planka.example.org/cards/17");
        assert_eq!(client.board_url("9"), "https://planka.example.org/boards/9");
    }

    #[test]
    fn ids_are_single_path_segments() {
        assert_eq!(segment("1913536964640900110").unwrap(), "1913536964640900110");
        for bad in ["", "1/../2", "1?x=2", "a b", "1#f"] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }
}
