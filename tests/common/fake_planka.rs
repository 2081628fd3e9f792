//! A fake Planka v2.1.1 for tests (Planka itself cannot run here). It follows
//! `docs/planka.md` exactly, odd parts included: string ids, `{"item"|"items",
//! "included"}` bodies, `{"code","message"}` errors, system lists with `null` name and position on
//! every board, 400 without a card `type`, 422 without a `position`, `X-Api-Key` (the key as a
//! Bearer token is refused), the terms step on a user's first password login.
//!
//! Switches simulate what tests need: expired tokens, a v1 server, an outage. Every request is
//! recorded so tests can assert what the client sent.
//!
//! Simplifications: every authenticated user sees every project; no labels, tasks, attachments
//! or actions (they are included as empty arrays where Planka includes them).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const CREATED_AT: &str = "2026-01-15T10:00:00.000Z";
/// What `GET /api/terms` signs; `accept-terms` must echo it.
pub const TERMS_SIGNATURE: &str = "6f1ed002ab5595859014ebf0951522d9a5f1b5d3b8a5e0a0e1c8d6a4f3c2b1a0";
const GAP: f64 = 65536.0;

/// How a request authenticated itself, as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenAuth {
    None,
    ApiKey(String),
    Bearer(String),
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: SeenAuth,
    pub body: Value,
}

#[derive(Clone, Debug)]
struct User {
    id: String,
    username: String,
    email: String,
    name: String,
    password: Option<String>,
    api_key: Option<String>,
    admin: bool,
    terms_accepted: bool,
}

#[derive(Clone, Debug)]
struct List {
    id: String,
    board_id: String,
    /// "active" | "closed" | "archive" | "trash"
    kind: &'static str,
    name: Option<String>,
    position: Option<f64>,
}

#[derive(Clone, Debug)]
struct Card {
    id: String,
    board_id: String,
    list_id: String,
    name: String,
    description: Option<String>,
    position: f64,
    is_closed: bool,
    creator: String,
    comments_total: u32,
}

#[derive(Default)]
struct Data {
    next_id: u64,
    users: Vec<User>,
    /// Valid JWTs → user id.
    tokens: Vec<(String, String)>,
    /// Pending terms tokens → user id.
    pending: Vec<(String, String)>,
    projects: Vec<(String, String)>,
    /// (id, project id, name, position)
    boards: Vec<(String, String, String, f64)>,
    /// (board id, user id)
    board_members: Vec<(String, String)>,
    lists: Vec<List>,
    cards: Vec<Card>,
    comments: Vec<Value>,
    /// (id, card id, user id)
    card_members: Vec<(String, String, String)>,
    seen: Vec<Seen>,
    v1: bool,
    down: bool,
    reject_tokens: bool,
    /// Requests with this method whose path ends so are carried out, but never answered.
    held: Option<(Method, String)>,
}

impl Data {
    /// Ids look like Planka's: 64-bit snowflakes above 2^53, always sent as strings.
    fn id(&mut self) -> String {
        self.next_id += 1;
        (1913536964640900000u64 + self.next_id * 7).to_string()
    }

    fn user_json(&self, u: &User) -> Value {
        let mut v = json!({
            "id": u.id, "createdAt": CREATED_AT, "updatedAt": null, "email": u.email,
            "role": if u.admin { "admin" } else { "boardUser" }, "name": u.name, "username": u.username,
            "phone": null, "organization": null, "language": null, "avatar": null, "isDeactivated": false,
        });
        if self.v1 {
            let o = v.as_object_mut().unwrap();
            o.remove("role");
            o.insert("isAdmin".into(), json!(u.admin));
        }
        v
    }

    fn list_json(&self, l: &List) -> Value {
        let mut v = json!({
            "id": l.id, "createdAt": CREATED_AT, "updatedAt": null, "type": l.kind, "position": l.position,
            "name": l.name, "color": null, "boardId": l.board_id,
        });
        if self.v1 {
            v.as_object_mut().unwrap().remove("type");
        }
        v
    }

    fn card_json(&self, c: &Card) -> Value {
        let mut v = json!({
            "id": c.id, "createdAt": CREATED_AT, "updatedAt": null, "type": "project", "position": c.position,
            "name": c.name, "description": c.description, "dueDate": null, "isDueCompleted": null,
            "stopwatch": null, "commentsTotal": c.comments_total, "isClosed": c.is_closed,
            "listChangedAt": CREATED_AT, "boardId": c.board_id, "listId": c.list_id,
            "creatorUserId": c.creator, "prevListId": null, "coverAttachmentId": null, "isSubscribed": false,
        });
        if self.v1 {
            let o = v.as_object_mut().unwrap();
            for k in ["type", "isClosed", "commentsTotal", "listChangedAt", "prevListId"] {
                o.remove(k);
            }
        }
        v
    }

    fn board_json(&self, b: &(String, String, String, f64)) -> Value {
        json!({"id": b.0, "createdAt": CREATED_AT, "updatedAt": null, "position": b.3, "name": b.2,
               "defaultView": "kanban", "defaultCardType": "project", "limitCardTypesToDefaultOne": false,
               "alwaysDisplayCardCreator": false, "projectId": b.1})
    }

    fn membership_json(&self, m: &(String, String, String)) -> Value {
        json!({"id": m.0, "createdAt": CREATED_AT, "updatedAt": null, "cardId": m.1, "userId": m.2})
    }

    /// Lists a client sees: v1 had no system lists.
    fn visible_lists(&self, board_id: &str) -> Vec<&List> {
        self.lists.iter().filter(|l| l.board_id == board_id && (!self.v1 || finite(l))).collect()
    }

    fn users_json(&self, ids: &[&String]) -> Vec<Value> {
        self.users.iter().filter(|u| ids.contains(&&u.id)).map(|u| self.user_json(u)).collect()
    }
}

fn finite(l: &List) -> bool {
    l.kind == "active" || l.kind == "closed"
}

/// A running fake. Dropping it leaves the server running until the test process ends.
#[derive(Clone)]
pub struct FakePlanka {
    pub url: String,
    data: Arc<Mutex<Data>>,
}

impl FakePlanka {
    pub async fn start() -> Self {
        let data = Arc::new(Mutex::new(Data::default()));
        let app = Router::new().fallback(handle).with_state(data.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, data }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        f(&mut self.data.lock().unwrap())
    }

    // ---- Seeding ----

    /// A user who can log in with `password` (if any); returns its id.
    pub fn add_user(&self, username: &str, name: &str, password: Option<&str>, admin: bool) -> String {
        self.with(|d| {
            let id = d.id();
            d.users.push(User {
                id: id.clone(),
                username: username.into(),
                email: format!("{username}@example.org"),
                name: name.into(),
                password: password.map(Into::into),
                api_key: None,
                admin,
                terms_accepted: false,
            });
            id
        })
    }

    /// Gives a user an API key, as `POST /api/users/{id}/api-key` would; returns the key.
    pub fn add_api_key(&self, user_id: &str) -> String {
        self.with(|d| {
            let key = format!("PjcRaX52_W8J9{}", d.id());
            d.users.iter_mut().find(|u| u.id == user_id).expect("user").api_key = Some(key.clone());
            key
        })
    }

    pub fn add_project(&self, name: &str) -> String {
        self.with(|d| {
            let id = d.id();
            d.projects.push((id.clone(), name.into()));
            id
        })
    }

    /// A board with its two system lists (`archive`, `trash`), as Planka v2 creates every board.
    pub fn add_board(&self, project_id: &str, name: &str) -> String {
        self.with(|d| {
            let id = d.id();
            let position = d.boards.iter().filter(|b| b.1 == project_id).map(|b| b.3).fold(0.0, f64::max) + GAP;
            d.boards.push((id.clone(), project_id.into(), name.into(), position));
            for kind in ["archive", "trash"] {
                let list_id = d.id();
                d.lists.push(List { id: list_id, board_id: id.clone(), kind, name: None, position: None });
            }
            id
        })
    }

    /// Replaces a user's email (seeded as `<username>@example.org`).
    pub fn set_email(&self, user_id: &str, email: &str) {
        self.with(|d| {
            if let Some(u) = d.users.iter_mut().find(|u| u.id == user_id) {
                u.email = email.into();
            }
        });
    }

    pub fn add_board_member(&self, board_id: &str, user_id: &str) {
        self.with(|d| d.board_members.push((board_id.into(), user_id.into())));
    }

    /// A list ("active" or "closed") at the end of the board.
    pub fn add_list(&self, board_id: &str, name: &str, kind: &'static str) -> String {
        self.with(|d| {
            let id = d.id();
            let position = d.lists.iter().filter(|l| l.board_id == board_id).filter_map(|l| l.position);
            let position = position.fold(0.0, f64::max) + GAP;
            d.lists.push(List {
                id: id.clone(),
                board_id: board_id.into(),
                kind,
                name: Some(name.into()),
                position: Some(position),
            });
            id
        })
    }

    /// A card at an explicit position (as a human dragging it there would leave it).
    pub fn add_card(&self, list_id: &str, name: &str, position: f64) -> String {
        self.with(|d| {
            let id = d.id();
            let list = d.lists.iter().find(|l| l.id == list_id).expect("list").clone();
            d.cards.push(Card {
                id: id.clone(),
                board_id: list.board_id,
                list_id: list_id.into(),
                name: name.into(),
                description: None,
                position,
                is_closed: list.kind == "closed",
                creator: String::new(),
                comments_total: 0,
            });
            id
        })
    }

    // ---- Switches ----

    /// Forgets every issued JWT, as an expiry or a secret rotation would.
    pub fn expire_tokens(&self) {
        self.with(|d| d.tokens.clear());
    }

    /// While on, every JWT is refused (even fresh ones), so a re-login cannot help.
    pub fn reject_tokens(&self, on: bool) {
        self.with(|d| d.reject_tokens = on);
    }

    /// Behave like Planka v1.26: no `type` on lists and cards, no system lists, no terms, no API
    /// keys, v1 comment and membership routes.
    pub fn set_v1(&self, on: bool) {
        self.with(|d| d.v1 = on);
    }

    /// While on, every request gets 503 from "the proxy in front".
    pub fn set_down(&self, on: bool) {
        self.with(|d| d.down = on);
    }

    /// While set, a request with `method` whose path ends with `suffix` is carried out and its
    /// answer held back for good: what the client sees when Planka did the work and the client
    /// died (or timed out) before the answer came.
    pub fn hold_answers(&self, hold: Option<(Method, &str)>) {
        self.with(|d| d.held = hold.map(|(method, suffix)| (method, suffix.to_owned())));
    }

    /// The terms text changed: every user must accept again at the next password login.
    pub fn change_terms(&self) {
        self.with(|d| d.users.iter_mut().for_each(|u| u.terms_accepted = false));
    }

    // ---- Inspection ----

    /// Every card, as `GET /api/cards/{id}` would show it.
    pub fn cards(&self) -> Vec<Value> {
        self.with(|d| d.cards.iter().map(|c| d.card_json(c)).collect())
    }

    pub fn card(&self, id: &str) -> Option<Value> {
        self.cards().into_iter().find(|c| c["id"] == id)
    }

    pub fn comments(&self) -> Vec<Value> {
        self.with(|d| d.comments.clone())
    }

    /// (card id, user id) pairs.
    pub fn card_memberships(&self) -> Vec<(String, String)> {
        self.with(|d| d.card_members.iter().map(|m| (m.1.clone(), m.2.clone())).collect())
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.with(|d| d.seen.clone())
    }

    /// How many requests matched `method path`.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests().iter().filter(|s| s.method == method && s.path == path).count()
    }

    pub fn clear_requests(&self) {
        self.with(|d| d.seen.clear());
    }
}

// ---- The HTTP side ----

fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    reply(status, json!({"code": code, "message": message}))
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "E_UNAUTHORIZED", "Access token is missing, invalid or expired")
}

fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, "E_NOT_FOUND", &format!("{what} not found"))
}

/// Sails' answer to a failed input validation.
fn missing_params(method: &Method, path: &str, problems: &[&str]) -> Response {
    let n = problems.len();
    let message = format!(
        "The server could not fulfill this request (`{method} {path}`) due to {n} missing or invalid parameter{}.",
        if n == 1 { "" } else { "s" }
    );
    reply(
        StatusCode::BAD_REQUEST,
        json!({"code": "E_MISSING_OR_INVALID_PARAMS", "problems": problems, "message": message}),
    )
}

fn unprocessable(message: &str) -> Response {
    error(StatusCode::UNPROCESSABLE_ENTITY, "E_UNPROCESSABLE_ENTITY", message)
}

/// The route's "unknown path" answer.
fn no_route() -> Response {
    (StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn handle(
    State(data): State<Arc<Mutex<Data>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let held = data
        .lock()
        .unwrap()
        .held
        .as_ref()
        .is_some_and(|(m, suffix)| *m == method && uri.path().ends_with(suffix.as_str()));
    let response = respond(&mut data.lock().unwrap(), method, &uri, &headers, &body);
    if held {
        std::future::pending::<()>().await;
    }
    response
}

fn respond(d: &mut Data, method: Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Response {
    let path = uri.path().to_owned();
    let auth = match (headers.get("x-api-key"), headers.get("authorization")) {
        (Some(key), _) => SeenAuth::ApiKey(key.to_str().unwrap_or_default().into()),
        (None, Some(value)) => match value.to_str().unwrap_or_default().strip_prefix("Bearer ") {
            Some(token) => SeenAuth::Bearer(token.into()),
            None => SeenAuth::None,
        },
        (None, None) => SeenAuth::None,
    };
    let json_body: Value =
        if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
    d.seen.push(Seen { method: method.to_string(), path: path.clone(), auth: auth.clone(), body: json_body.clone() });
    if d.down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response();
    }
    if !body.is_empty() && json_body.is_null() {
        return error(StatusCode::BAD_REQUEST, "E_MISSING_OR_INVALID_PARAMS", "Invalid JSON body");
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    if !path.starts_with("/api/") {
        return no_route();
    }

    // Routes without authentication.
    match (&method, segments.as_slice()) {
        (&Method::POST, ["access-tokens"]) => return login(d, &json_body),
        (&Method::POST, ["access-tokens", "accept-terms"]) if !d.v1 => return accept_terms(d, &json_body),
        (&Method::GET, ["terms"]) if !d.v1 => {
            return ok(json!({"item": {"type": "general", "language": "en-US",
                "content": "# Terms of Service\n\nBe nice.", "signature": TERMS_SIGNATURE}}));
        }
        // Unknown routes are 404 before any authentication.
        (_, ["terms"] | ["access-tokens", "accept-terms"]) => return no_route(),
        _ => {}
    }

    let user_id = match authenticate(d, &auth) {
        Some(id) => id,
        None => return unauthorized(),
    };
    route(d, &method, &path, &segments, &json_body, &user_id)
}

/// The user a request acts as: `X-Api-Key` (v2 only), or a valid `Bearer` JWT. An API key sent as
/// a Bearer token is not a JWT, so it is refused.
fn authenticate(d: &Data, auth: &SeenAuth) -> Option<String> {
    match auth {
        SeenAuth::ApiKey(key) if !d.v1 => {
            d.users.iter().find(|u| u.api_key.as_deref() == Some(key)).map(|u| u.id.clone())
        }
        SeenAuth::Bearer(token) if !d.reject_tokens => {
            d.tokens.iter().find(|(t, _)| t == token).map(|(_, user)| user.clone())
        }
        _ => None,
    }
}

fn issue_token(d: &mut Data, user_id: &str) -> String {
    let token = format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}.sig{}", user_id, d.id());
    d.tokens.push((token.clone(), user_id.into()));
    token
}

fn login(d: &mut Data, body: &Value) -> Response {
    let (Some(who), Some(password)) = (body["emailOrUsername"].as_str(), body["password"].as_str()) else {
        return missing_params(
            &Method::POST,
            "/api/access-tokens",
            &["\"emailOrUsername\" is required, but it was not defined."],
        );
    };
    let user =
        d.users.iter().find(|u| (u.username == who || u.email == who) && u.password.as_deref() == Some(password));
    let Some(user) = user.cloned() else {
        return error(StatusCode::UNAUTHORIZED, "E_UNAUTHORIZED", "Invalid credentials");
    };
    if !d.v1 && !user.terms_accepted {
        let pending = format!("eyJwZW5kaW5nIjp0cnVlfQ.{}.p{}", user.id, d.id());
        d.pending.push((pending.clone(), user.id.clone()));
        return reply(
            StatusCode::FORBIDDEN,
            json!({"code": "E_FORBIDDEN", "step": "accept-terms", "pendingToken": pending,
                   "message": "Terms acceptance required"}),
        );
    }
    ok(json!({"item": issue_token(d, &user.id)}))
}

fn accept_terms(d: &mut Data, body: &Value) -> Response {
    let (Some(pending), Some(signature)) = (body["pendingToken"].as_str(), body["signature"].as_str()) else {
        return missing_params(
            &Method::POST,
            "/api/access-tokens/accept-terms",
            &["\"pendingToken\" is required, but it was not defined."],
        );
    };
    let Some(index) = d.pending.iter().position(|(t, _)| t == pending) else {
        return error(StatusCode::UNAUTHORIZED, "E_UNAUTHORIZED", "Invalid pending token");
    };
    if signature != TERMS_SIGNATURE {
        return unprocessable("Invalid signature");
    }
    let (_, user_id) = d.pending.remove(index);
    d.users.iter_mut().find(|u| u.id == user_id).unwrap().terms_accepted = true;
    ok(json!({"item": issue_token(d, &user_id)}))
}

fn route(d: &mut Data, method: &Method, path: &str, segments: &[&str], body: &Value, me: &str) -> Response {
    match (method, segments) {
        (&Method::GET, ["users", "me"]) => {
            let user = d.users.iter().find(|u| u.id == me).unwrap();
            ok(json!({"item": d.user_json(user)}))
        }
        (&Method::GET, ["projects"]) => {
            let items: Vec<Value> = d
                .projects
                .iter()
                .map(|(id, name)| {
                    json!({"id": id, "createdAt": CREATED_AT, "updatedAt": null, "ownerProjectManagerId": null,
                           "backgroundImageId": null, "name": name, "description": null,
                           "backgroundType": null, "backgroundGradient": null, "isHidden": false})
                })
                .collect();
            let boards: Vec<Value> = d.boards.iter().map(|b| d.board_json(b)).collect();
            let memberships: Vec<Value> = d
                .board_members
                .iter()
                .enumerate()
                .map(|(i, (b, u))| json!({"id": format!("{}", 1913536964640800000u64 + i as u64), "boardId": b, "userId": u, "role": "editor"}))
                .collect();
            let member_ids: Vec<&String> = d.board_members.iter().map(|(_, u)| u).collect();
            ok(json!({"items": items, "included": {
                "users": d.users_json(&member_ids), "projectManagers": [], "backgroundImages": [],
                "baseCustomFieldGroups": [], "boards": boards, "boardMemberships": memberships,
                "customFields": [], "notificationServices": []}}))
        }
        (&Method::GET, ["boards", id]) => {
            let Some(board) = d.boards.iter().find(|b| b.0 == *id) else { return not_found("Board") };
            let lists = d.visible_lists(id);
            let list_ids: Vec<&String> = lists.iter().filter(|l| finite(l)).map(|l| &l.id).collect();
            // Planka leaves the cards of archive and trash out of the board; they are paged separately.
            let cards: Vec<&Card> = d.cards.iter().filter(|c| list_ids.contains(&&c.list_id)).collect();
            let card_ids: Vec<&String> = cards.iter().map(|c| &c.id).collect();
            let card_members: Vec<Value> =
                d.card_members.iter().filter(|m| card_ids.contains(&&m.1)).map(|m| d.membership_json(m)).collect();
            let mut user_ids: Vec<&String> = d.board_members.iter().filter(|(b, _)| b == id).map(|(_, u)| u).collect();
            user_ids.extend(d.card_members.iter().filter(|m| card_ids.contains(&&m.1)).map(|m| &m.2));
            let project = d.projects.iter().find(|p| p.0 == board.1).unwrap();
            ok(json!({"item": d.board_json(board), "included": {
                "users": d.users_json(&user_ids),
                "boardMemberships": d.board_members.iter().filter(|(b, _)| b == id)
                    .map(|(b, u)| json!({"boardId": b, "userId": u, "role": "editor"})).collect::<Vec<_>>(),
                "labels": [], "lists": lists.iter().map(|l| d.list_json(l)).collect::<Vec<_>>(),
                "cards": cards.iter().map(|c| d.card_json(c)).collect::<Vec<_>>(),
                "cardMemberships": card_members, "cardLabels": [], "taskLists": [], "tasks": [],
                "attachments": [], "customFieldGroups": [], "customFields": [], "customFieldValues": [],
                "projects": [{"id": project.0, "name": project.1}]}}))
        }
        // v1 had no endpoint that reads one list.
        (&Method::GET, ["lists", id]) if !d.v1 => {
            let Some(list) = d.lists.iter().find(|l| l.id == *id) else { return not_found("List") };
            ok(json!({"item": d.list_json(list), "included": {"users": [], "cards": [], "cardMemberships": [],
                "cardLabels": [], "taskLists": [], "tasks": [], "attachments": [], "customFieldGroups": [],
                "customFields": [], "customFieldValues": []}}))
        }
        (&Method::GET, ["lists", id, "cards"]) if !d.v1 => {
            if !d.lists.iter().any(|l| l.id == *id) {
                return not_found("List");
            }
            let cards: Vec<Value> = d.cards.iter().filter(|c| c.list_id == *id).map(|c| d.card_json(c)).collect();
            ok(json!({"items": cards, "included": {"users": [], "cardMemberships": [], "cardLabels": [],
                "taskLists": [], "tasks": [], "attachments": [], "customFieldGroups": [], "customFields": [],
                "customFieldValues": []}}))
        }
        (&Method::POST, ["lists", id, "cards"]) => create_card(d, method, path, id, body, me),
        (&Method::GET, ["cards", id]) => {
            let Some(card) = d.cards.iter().find(|c| c.id == *id) else { return not_found("Card") };
            let members: Vec<Value> =
                d.card_members.iter().filter(|m| m.1 == *id).map(|m| d.membership_json(m)).collect();
            let user_ids: Vec<&String> = d.card_members.iter().filter(|m| m.1 == *id).map(|m| &m.2).collect();
            ok(json!({"item": d.card_json(card), "included": {"cardMemberships": members, "cardLabels": [],
                "users": d.users_json(&user_ids), "taskLists": [], "tasks": [], "attachments": [],
                "customFieldGroups": [], "customFields": [], "customFieldValues": []}}))
        }
        (&Method::PATCH, ["cards", id]) => update_card(d, id, body),
        (&Method::DELETE, ["cards", id]) => {
            let Some(index) = d.cards.iter().position(|c| c.id == *id) else { return not_found("Card") };
            let card = d.cards.remove(index);
            ok(json!({"item": d.card_json(&card)}))
        }
        (&Method::GET, ["cards", id, "comments"]) if !d.v1 => {
            if !d.cards.iter().any(|c| c.id == *id) {
                return not_found("Card");
            }
            let items: Vec<Value> = d.comments.iter().filter(|c| c["cardId"] == *id).rev().cloned().collect();
            let user_ids: Vec<String> = items.iter().filter_map(|c| c["userId"].as_str().map(Into::into)).collect();
            ok(json!({"items": items, "included": {"users": d.users_json(&user_ids.iter().collect::<Vec<_>>())}}))
        }
        (&Method::POST, ["cards", id, "comments"]) if !d.v1 => add_comment(d, method, path, id, body, me),
        (&Method::POST, ["cards", id, "comment-actions"]) if d.v1 => add_comment(d, method, path, id, body, me),
        (&Method::POST, ["cards", id, "card-memberships"]) if !d.v1 => add_member(d, method, path, id, body),
        (&Method::POST, ["cards", id, "memberships"]) if d.v1 => add_member(d, method, path, id, body),
        (&Method::DELETE, ["cards", id, "card-memberships", user]) if !d.v1 => {
            let Some(user_id) = user.strip_prefix("userId:") else { return no_route() };
            let Some(index) = d.card_members.iter().position(|m| m.1 == *id && m.2 == user_id) else {
                return not_found("Card membership");
            };
            let m = d.card_members.remove(index);
            ok(json!({"item": d.membership_json(&m)}))
        }
        _ => no_route(),
    }
}

fn create_card(d: &mut Data, method: &Method, path: &str, list_id: &str, body: &Value, me: &str) -> Response {
    let mut problems = Vec::new();
    if !d.v1 && !matches!(body["type"].as_str(), Some("project" | "story")) {
        problems.push("\"type\" is required, but it was not defined.");
    }
    if body["name"].as_str().is_none_or(str::is_empty) {
        problems.push("\"name\" is required, but it was not defined.");
    }
    if !problems.is_empty() {
        return missing_params(method, path, &problems);
    }
    let Some(list) = d.lists.iter().find(|l| l.id == list_id && finite(l)).cloned() else { return not_found("List") };
    let Some(position) = body["position"].as_f64() else { return unprocessable("Position must be present") };
    let id = d.id();
    let card = Card {
        id,
        board_id: list.board_id.clone(),
        list_id: list.id.clone(),
        name: body["name"].as_str().unwrap().into(),
        description: body["description"].as_str().map(Into::into),
        position,
        is_closed: list.kind == "closed",
        creator: me.into(),
        comments_total: 0,
    };
    let json = d.card_json(&card);
    d.cards.push(card);
    ok(json!({"item": json}))
}

fn update_card(d: &mut Data, card_id: &str, body: &Value) -> Response {
    let Some(index) = d.cards.iter().position(|c| c.id == card_id) else { return not_found("Card") };
    let mut card = d.cards[index].clone();
    if let Some(list_id) = body["listId"].as_str() {
        // Without `boardId` the target list must be on the card's board.
        let board_id = body["boardId"].as_str().unwrap_or(&card.board_id).to_owned();
        let Some(list) = d.lists.iter().find(|l| l.id == list_id && l.board_id == board_id).cloned() else {
            return not_found("List");
        };
        let Some(position) = body["position"].as_f64() else { return unprocessable("Position must be present") };
        card.list_id = list.id;
        card.board_id = list.board_id;
        card.position = position;
        card.is_closed = list.kind == "closed";
    } else if let Some(position) = body["position"].as_f64() {
        card.position = position;
    }
    if let Some(name) = body["name"].as_str() {
        card.name = name.into();
    }
    if let Some(description) = body.get("description") {
        card.description = description.as_str().map(Into::into);
    }
    if let Some(closed) = body["isClosed"].as_bool() {
        card.is_closed = closed;
    }
    let json = d.card_json(&card);
    d.cards[index] = card;
    ok(json!({"item": json}))
}

fn add_comment(d: &mut Data, method: &Method, path: &str, card_id: &str, body: &Value, me: &str) -> Response {
    let Some(text) = body["text"].as_str().filter(|t| !t.is_empty()) else {
        return missing_params(method, path, &["\"text\" is required, but it was not defined."]);
    };
    let Some(card) = d.cards.iter_mut().find(|c| c.id == card_id) else { return not_found("Card") };
    card.comments_total += 1;
    let id = d.id();
    let comment =
        json!({"id": id, "createdAt": CREATED_AT, "updatedAt": null, "text": text, "cardId": card_id, "userId": me});
    d.comments.push(comment.clone());
    ok(json!({"item": comment}))
}

fn add_member(d: &mut Data, method: &Method, path: &str, card_id: &str, body: &Value) -> Response {
    let Some(user_id) = body["userId"].as_str() else {
        return missing_params(method, path, &["\"userId\" is required, but it was not defined."]);
    };
    if !d.cards.iter().any(|c| c.id == card_id) {
        return not_found("Card");
    }
    if !d.users.iter().any(|u| u.id == user_id) {
        return not_found("User");
    }
    // From Planka's sources (not observed): a second membership is a conflict.
    if d.card_members.iter().any(|m| m.1 == card_id && m.2 == user_id) {
        return error(StatusCode::CONFLICT, "E_CONFLICT", "User already card member");
    }
    let id = d.id();
    let m = (id, card_id.to_owned(), user_id.to_owned());
    let json = d.membership_json(&m);
    d.card_members.push(m);
    ok(json!({"item": json}))
}
