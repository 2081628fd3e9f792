//! The Planka client against the fake Planka (tests/common/fake_planka.rs), which follows
//! docs/planka.md: authentication, the terms step, token expiry, boards, cards, comments, members,
//! errors, outages and v1 detection.

mod common;

use common::fake_planka::{FakePlanka, SeenAuth};
use conclave_agent::config;
use conclave_agent::planka::{ListKind, PlankaClient, PlankaError};
use conclave_agent::secret::Secret;
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// A fake with one project "Conclave", a board "Dev" (lists "To do" and "Done"), a second board
/// "Ops" (list "Inbox"), an admin with a password and an API key, and a user bob.
struct World {
    fake: FakePlanka,
    admin: String,
    bob: String,
    key: String,
    board: String,
    todo: String,
    done: String,
    ops_inbox: String,
}

async fn world() -> World {
    let fake = FakePlanka::start().await;
    let admin = fake.add_user("admin", "Ada Admin", Some(ADMIN_PASSWORD), true);
    let key = fake.add_api_key(&admin);
    let bob = fake.add_user("bob", "Bob", None, false);
    let project = fake.add_project("Conclave");
    let board = fake.add_board(&project, "Dev");
    fake.add_board_member(&board, &admin);
    fake.add_board_member(&board, &bob);
    let todo = fake.add_list(&board, "To do", "active");
    let done = fake.add_list(&board, "Done", "closed");
    let ops = fake.add_board(&project, "Ops");
    let ops_inbox = fake.add_list(&ops, "Inbox", "active");
    World { fake, admin, bob, key, board, todo, done, ops_inbox }
}

fn planka_config(url: &str) -> config::Planka {
    config::Planka { url: url.into(), public_url: String::new(), ..Default::default() }
}

fn key_client(url: &str, key: &str) -> PlankaClient {
    let config = config::Planka { api_key: Secret::new(key), ..planka_config(url) };
    PlankaClient::new(&config, Duration::from_secs(5)).unwrap()
}

fn password_client(url: &str, username: &str, password: &str) -> PlankaClient {
    let config = config::Planka { username: username.into(), password: Secret::new(password), ..planka_config(url) };
    PlankaClient::new(&config, Duration::from_secs(5)).unwrap()
}

/// A raw call, to check the fake itself.
async fn raw(method: reqwest::Method, url: String, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn logins(fake: &FakePlanka) -> usize {
    fake.count("POST", "/api/access-tokens")
}

#[tokio::test]
async fn api_key_is_sent_as_x_api_key_and_never_logs_in() {
    let w = world().await;
    let client = key_client(&w.fake.url, &w.key);
    let me = client.me().await.unwrap();
    assert_eq!(me.id, w.admin);
    assert_eq!(me.username.as_deref(), Some("admin"));
    assert_eq!(me.email.as_deref(), Some("admin@example.org"));
    assert_eq!(me.name, "Ada Admin");
    assert_eq!(logins(&w.fake), 0);
    let authed: Vec<_> = w.fake.requests().into_iter().filter(|r| r.path != "/api/terms").collect();
    assert!(!authed.is_empty());
    assert!(authed.iter().all(|r| r.auth == SeenAuth::ApiKey(w.key.clone())), "{authed:?}");
}

#[tokio::test]
async fn password_login_accepts_the_terms_once_and_caches_the_token() {
    let w = world().await;
    let client = password_client(&w.fake.url, "admin", ADMIN_PASSWORD);
    assert_eq!(client.me().await.unwrap().id, w.admin);
    assert_eq!(client.projects_with_boards().await.unwrap().len(), 1);
    assert_eq!(logins(&w.fake), 1, "the token is cached");
    assert_eq!(w.fake.count("POST", "/api/access-tokens/accept-terms"), 1);
    let accept = w.fake.requests().into_iter().find(|r| r.path == "/api/access-tokens/accept-terms").unwrap();
    assert_eq!(accept.body["signature"], common::fake_planka::TERMS_SIGNATURE);
    let me = w.fake.requests().into_iter().find(|r| r.path == "/api/users/me").unwrap();
    assert!(matches!(me.auth, SeenAuth::Bearer(ref t) if t.starts_with("eyJ")), "{:?}", me.auth);

    // Terms accepted: a later login (a restarted agent) gets its token directly.
    let restarted = password_client(&w.fake.url, "admin", ADMIN_PASSWORD);
    restarted.me().await.unwrap();
    assert_eq!(logins(&w.fake), 2);
    assert_eq!(w.fake.count("POST", "/api/access-tokens/accept-terms"), 1);

    // Changed terms: accepted again.
    w.fake.change_terms();
    password_client(&w.fake.url, "admin", ADMIN_PASSWORD).me().await.unwrap();
    assert_eq!(w.fake.count("POST", "/api/access-tokens/accept-terms"), 2);
}

#[tokio::test]
async fn expired_token_means_one_new_login_then_an_error() {
    let w = world().await;
    let client = password_client(&w.fake.url, "admin", ADMIN_PASSWORD);
    client.me().await.unwrap();
    w.fake.expire_tokens();
    assert_eq!(client.me().await.unwrap().id, w.admin, "a fresh login recovers");
    assert_eq!(logins(&w.fake), 2);

    w.fake.reject_tokens(true);
    w.fake.clear_requests();
    let err = client.me().await.unwrap_err();
    assert!(matches!(err, PlankaError::Unauthorized { status: 401, .. }), "{err:?}");
    assert_eq!(err.code(), Some("E_UNAUTHORIZED"));
    assert_eq!(err.message(), Some("Access token is missing, invalid or expired"));
    assert_eq!(logins(&w.fake), 1, "exactly one re-login");
    assert_eq!(w.fake.count("GET", "/api/users/me"), 2);
    assert!(!err.is_transient());
    assert!(err.to_string().contains("planka.username"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_unauthorized_with_plankas_message() {
    let w = world().await;
    let err = password_client(&w.fake.url, "admin", "nope").me().await.unwrap_err();
    assert!(matches!(err, PlankaError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.message(), Some("Invalid credentials"));
    assert_eq!(logins(&w.fake), 1, "a refused login is not repeated");
    assert!(err.to_string().starts_with("Planka refused the agent's credentials"), "{err}");
}

/// Fixture self-check: the fake Planka keeps the real server's odd part (an API key is only
/// accepted as `X-Api-Key`, a Bearer one is refused). What the client does with it is tested above.
#[tokio::test]
async fn fixture_self_check_the_fake_refuses_an_api_key_sent_as_bearer() {
    let w = world().await;
    let me = format!("{}/api/users/me", w.fake.url);
    let bearer = format!("Bearer {}", w.key);
    let (status, body) = raw(reqwest::Method::GET, me.clone(), &[("Authorization", &bearer)], None).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"code": "E_UNAUTHORIZED", "message": "Access token is missing, invalid or expired"}));
    let (status, body) = raw(reqwest::Method::GET, me, &[("X-Api-Key", &w.key)], None).await;
    assert_eq!(status, 200);
    assert_eq!(body["item"]["id"], w.admin);
}

#[tokio::test]
async fn board_skips_system_lists_and_sorts_lists() {
    let w = world().await;
    let url = format!("{}/api/boards/{}", w.fake.url, w.board);
    let (_, body) = raw(reqwest::Method::GET, url, &[("X-Api-Key", &w.key)], None).await;
    let system: Vec<_> = body["included"]["lists"].as_array().unwrap().iter().filter(|l| l["name"].is_null()).collect();
    assert_eq!(system.len(), 2, "the fake has Planka's archive and trash lists");
    assert!(system.iter().all(|l| l["position"].is_null() && (l["type"] == "archive" || l["type"] == "trash")));

    let client = key_client(&w.fake.url, &w.key);
    let card = w.fake.add_card(&w.todo, "Existing", 65536.0);
    let view = client.board(&w.board).await.unwrap();
    assert_eq!(view.board.name, "Dev");
    let lists: Vec<_> = view.lists.iter().map(|l| (l.id.as_str(), l.name.as_str(), l.kind)).collect();
    assert_eq!(lists, [(w.todo.as_str(), "To do", ListKind::Active), (w.done.as_str(), "Done", ListKind::Closed)]);
    assert_eq!(view.cards.len(), 1);
    assert_eq!(view.cards[0].id, card);
    let mut users: Vec<_> = view.users.iter().map(|u| u.id.clone()).collect();
    users.sort();
    let mut want = vec![w.admin.clone(), w.bob.clone()];
    want.sort();
    assert_eq!(users, want);
    assert_eq!(client.board_url(&w.board), format!("{}/boards/{}", w.fake.url, w.board));
}

#[tokio::test]
async fn find_board_by_project_and_board_name() {
    let w = world().await;
    let odd = w.fake.add_project("R&D/2026");
    let odd_board = w.fake.add_board(&odd, "Ideas");
    let client = key_client(&w.fake.url, &w.key);
    let projects = client.projects_with_boards().await.unwrap();
    let names: Vec<_> = projects
        .iter()
        .map(|p| (p.project.name.as_str(), p.boards.iter().map(|b| b.name.as_str()).collect::<Vec<_>>()))
        .collect();
    assert_eq!(names, [("Conclave", vec!["Dev", "Ops"]), ("R&D/2026", vec!["Ideas"])]);

    let cases = [
        ("exact", "Conclave/Dev", Some(w.board.as_str())),
        ("case and spaces ignored", "  conclave/dev ", Some(w.board.as_str())),
        ("slash in the project name", "R&D/2026/Ideas", Some(odd_board.as_str())),
        ("unknown board", "Conclave/Nope", None),
        ("board name alone", "Dev", None),
    ];
    for (name, query, want) in cases {
        let got = client.find_board(query).await.unwrap();
        assert_eq!(got.as_ref().map(|b| b.id.as_str()), want, "{name}");
    }
}

#[tokio::test]
async fn create_card_appends_after_the_highest_position() {
    let w = world().await;
    w.fake.add_card(&w.todo, "a", 65536.0);
    w.fake.add_card(&w.todo, "b", 300000.5);
    w.fake.add_card(&w.done, "elsewhere", 900000.0);
    let client = key_client(&w.fake.url, &w.key);

    let card = client.create_card(&w.todo, "Fix the login redirect", Some("From #dev")).await.unwrap();
    assert_eq!(card.position, 300000.5 + 65536.0);
    assert_eq!(card.list_id, w.todo);
    assert_eq!(card.board_id, w.board);
    assert_eq!(card.name, "Fix the login redirect");
    assert_eq!(card.description.as_deref(), Some("From #dev"));
    assert!(!card.is_closed);
    let sent = w.fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/cards")).unwrap();
    assert_eq!(sent.body["type"], "project");

    let stored = w.fake.card(&card.id).unwrap();
    assert_eq!(stored["position"], 300000.5 + 65536.0);
    assert_eq!(stored["creatorUserId"], w.admin);

    let second = client.create_card(&w.todo, "Next", None).await.unwrap();
    assert_eq!(second.position, 300000.5 + 2.0 * 65536.0);
    assert_eq!(w.fake.card(&second.id).unwrap()["description"], Value::Null);

    let ops = client.create_card(&w.ops_inbox, "First in an empty list", None).await.unwrap();
    assert_eq!(ops.position, 65536.0);
    assert_eq!(client.card_url(&ops.id), format!("{}/cards/{}", w.fake.url, ops.id));
}

/// Fixture self-check: the fake answers a card without `type` or `position` as the real server
/// does; the client's own card creation (which sends both) is tested above.
#[tokio::test]
async fn fixture_self_check_the_fake_reproduces_400_without_type_and_422_without_position() {
    let w = world().await;
    let url = format!("{}/api/lists/{}/cards", w.fake.url, w.todo);
    let key = [("X-Api-Key", w.key.as_str())];
    let (status, body) =
        raw(reqwest::Method::POST, url.clone(), &key, Some(json!({"position": 65536, "name": "x"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "E_MISSING_OR_INVALID_PARAMS");
    assert!(body["problems"][0].as_str().unwrap().contains("\"type\""), "{body}");
    let (status, body) =
        raw(reqwest::Method::POST, url.clone(), &key, Some(json!({"type": "project", "name": "x"}))).await;
    assert_eq!(status, 422);
    assert_eq!(body, json!({"code": "E_UNPROCESSABLE_ENTITY", "message": "Position must be present"}));
    let (status, body) =
        raw(reqwest::Method::POST, url, &key, Some(json!({"type": "project", "position": 65536, "name": "x"}))).await;
    assert_eq!(status, 200);
    assert!(body["item"]["id"].is_string(), "ids are strings: {body}");
    assert!(w.fake.cards().len() == 1);
}

#[tokio::test]
async fn move_card_appends_to_the_target_list_and_closes_in_closed_lists() {
    let w = world().await;
    let card = w.fake.add_card(&w.todo, "Ship it", 65536.0);
    w.fake.add_card(&w.done, "Old", 131072.0);
    let client = key_client(&w.fake.url, &w.key);

    let moved = client.move_card(&card, &w.done).await.unwrap();
    assert_eq!((moved.list_id.as_str(), moved.position, moved.is_closed), (w.done.as_str(), 196608.0, true));
    let stored = w.fake.card(&card).unwrap();
    assert_eq!((stored["listId"].as_str(), stored["isClosed"].as_bool()), (Some(w.done.as_str()), Some(true)));

    let back = client.move_card(&card, &w.todo).await.unwrap();
    assert_eq!((back.list_id.as_str(), back.position, back.is_closed), (w.todo.as_str(), 65536.0, false));

    // Another board: the body names it, as Planka requires.
    let across = client.move_card(&card, &w.ops_inbox).await.unwrap();
    assert_eq!(across.list_id, w.ops_inbox);
    assert_ne!(across.board_id, w.board);
    let patch = w.fake.requests().into_iter().rfind(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body["boardId"], across.board_id);
}

#[tokio::test]
async fn comment_and_add_member() {
    let w = world().await;
    let card = w.fake.add_card(&w.todo, "Discuss", 65536.0);
    let client = key_client(&w.fake.url, &w.key);

    let comment = client.comment(&card, "Looks good to me").await.unwrap();
    assert_eq!((comment.card_id.as_str(), comment.user_id.as_str()), (card.as_str(), w.admin.as_str()));
    assert_eq!(comment.text, "Looks good to me");
    let stored = w.fake.comments();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], comment.id);
    assert_eq!(w.fake.card(&card).unwrap()["commentsTotal"], 1);

    client.add_card_member(&card, &w.bob).await.unwrap();
    client.add_card_member(&card, &w.bob).await.unwrap(); // already a member: fine
    assert_eq!(w.fake.card_memberships(), [(card.clone(), w.bob.clone())]);
    let err = client.add_card_member(&card, "1913536964640999999").await.unwrap_err();
    assert!(matches!(err, PlankaError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn unknown_card_is_not_found_with_plankas_code_and_message() {
    let w = world().await;
    let client = key_client(&w.fake.url, &w.key);
    let err = client.card("1913536964640999999").await.unwrap_err();
    assert!(matches!(err, PlankaError::NotFound { status: 404, .. }), "{err:?}");
    assert_eq!(err.code(), Some("E_NOT_FOUND"));
    assert_eq!(err.message(), Some("Card not found"));
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "Planka could not find it: Card not found (E_NOT_FOUND)");
    for call in [client.move_card("1913536964640999999", &w.todo).await, client.card("../users/me").await] {
        assert!(matches!(call, Err(PlankaError::NotFound { .. })), "{call:?}");
    }
}

#[tokio::test]
async fn planka_down_or_unreachable_or_slow_is_transient_and_named() {
    let w = world().await;
    let client = key_client(&w.fake.url, &w.key);
    client.me().await.unwrap();
    w.fake.set_down(true);
    let err = client.board(&w.board).await.unwrap_err();
    assert!(matches!(err, PlankaError::Unavailable { status: 503, .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().starts_with("Planka is unavailable"), "{err}");
    w.fake.set_down(false);
    client.board(&w.board).await.unwrap();

    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let err = key_client(&closed, "k").me().await.unwrap_err();
    assert!(matches!(err, PlankaError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().starts_with("Planka at http://127.0.0.1"), "{err}");

    // A server that accepts and never answers: the timeout ends the call.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = config::Planka { api_key: Secret::new("k"), ..planka_config(&silent_url) };
    let slow = PlankaClient::new(&config, Duration::from_millis(300)).unwrap();
    let err = slow.me().await.unwrap_err();
    assert!(matches!(err, PlankaError::Timeout(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().starts_with("Planka did not answer"), "{err}");
}

#[tokio::test]
async fn v1_server_is_unsupported() {
    let w = world().await;
    w.fake.set_v1(true);
    for client in [key_client(&w.fake.url, &w.key), password_client(&w.fake.url, "admin", ADMIN_PASSWORD)] {
        let err = client.board(&w.board).await.unwrap_err();
        assert!(matches!(err, PlankaError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("needs Planka v2"), "{err}");
        assert!(!err.is_transient());
    }
    // The fake's v1 board itself: no `type`, no system lists.
    let client = password_client(&w.fake.url, "admin", ADMIN_PASSWORD);
    assert!(client.me().await.is_err());
    let login = reqwest::Client::new()
        .post(format!("{}/api/access-tokens", w.fake.url))
        .json(&json!({"emailOrUsername": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "v1 has no terms step");
    let token: Value = login.json().await.unwrap();
    let bearer = format!("Bearer {}", token["item"].as_str().unwrap());
    let url = format!("{}/api/boards/{}", w.fake.url, w.board);
    let (_, body) = raw(reqwest::Method::GET, url, &[("Authorization", &bearer)], None).await;
    let lists = body["included"]["lists"].as_array().unwrap();
    assert_eq!(lists.len(), 2);
    assert!(lists.iter().all(|l| l.get("type").is_none()));
}

#[tokio::test]
async fn ids_stay_strings_end_to_end() {
    let w = world().await;
    let client = key_client(&w.fake.url, &w.key);
    let card = client.create_card(&w.todo, "Big ids", None).await.unwrap();
    // Above 2^53: a float on the way would have changed the digits.
    assert!(card.id.parse::<u64>().unwrap() > (1u64 << 53));
    let stored = w.fake.cards();
    assert_eq!(stored[0]["id"].as_str(), Some(card.id.as_str()));
    assert_eq!(stored[0]["listId"].as_str(), Some(w.todo.as_str()));
    assert_eq!(client.card(&card.id).await.unwrap().id, card.id);
    let raw_cards = w.fake.requests().into_iter().filter(|r| r.path == format!("/api/cards/{}", card.id)).count();
    assert_eq!(raw_cards, 1, "the id went back into the path digit for digit");
}

#[tokio::test]
async fn secrets_stay_out_of_debug() {
    let w = world().await;
    let client = password_client(&w.fake.url, "admin", ADMIN_PASSWORD);
    client.me().await.unwrap();
    let token = w
        .fake
        .requests()
        .into_iter()
        .find_map(|r| match r.auth {
            SeenAuth::Bearer(t) => Some(t),
            _ => None,
        })
        .unwrap();
    let with_key = key_client(&w.fake.url, &w.key);
    let debug = format!("{client:?} {with_key:?}");
    for secret in [ADMIN_PASSWORD, token.as_str(), w.key.as_str()] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("admin"), "the username is not secret: {debug}");
}
