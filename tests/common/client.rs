//! A small Matrix client for the test's humans (and for acting as the appservice's own users).

use super::synapse::{SERVER_NAME, synapse};
use super::wait_for;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

#[derive(Clone)]
pub struct User {
    pub user_id: String,
    token: String,
    /// Set for appservice users: `?user_id=` identity assertion.
    assert_as: Option<String>,
    http: reqwest::Client,
    base: String,
}

impl User {
    /// Registers a fresh human user whose name starts with `prefix`.
    pub async fn register(prefix: &str) -> Self {
        // No idle connections kept: a homeserver restarted under a test leaves none stale.
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(0).build().unwrap();
        let base = synapse().url.clone();
        let username = unique(prefix);
        let body = json!({"username": username, "password": "test-password-1", "auth": {"type": "m.login.dummy"}});
        let r: Value = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = r["access_token"].as_str().unwrap_or_else(|| panic!("register failed: {r}")).to_owned();
        Self { user_id: r["user_id"].as_str().unwrap().to_owned(), token, assert_as: None, http, base }
    }

    /// Acts as an appservice user (the agent or a ghost) with the slot's as_token.
    pub fn appservice(as_token: &str, user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            token: as_token.to_owned(),
            assert_as: Some(user_id.to_owned()),
            http: reqwest::Client::new(),
            base: synapse().url.clone(),
        }
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req =
            self.http.request(method, format!("{}/_matrix/client/v3{path}", self.base)).bearer_auth(&self.token);
        if let Some(user) = &self.assert_as {
            req = req.query(&[("user_id", user)]);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.request(method, path, body).await;
        assert!((200..300).contains(&status), "{path} -> {status} {v}");
        v
    }

    /// Creates a room (private chat preset) and invites `invite`.
    pub async fn create_room(&self, invite: &[&str]) -> String {
        let v = self
            .ok(reqwest::Method::POST, "/createRoom", Some(json!({"preset": "private_chat", "invite": invite})))
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn invite(&self, room: &str, user: &str) -> (u16, Value) {
        self.request(reqwest::Method::POST, &format!("/rooms/{}/invite", enc(room)), Some(json!({"user_id": user})))
            .await
    }

    pub async fn join(&self, room: &str) {
        self.ok(reqwest::Method::POST, &format!("/join/{}", enc(room)), Some(json!({}))).await;
    }

    pub async fn leave(&self, room: &str) {
        self.ok(reqwest::Method::POST, &format!("/rooms/{}/leave", enc(room)), Some(json!({}))).await;
    }

    pub async fn send(&self, room: &str, event_type: &str, content: Value) -> String {
        let path = format!("/rooms/{}/send/{event_type}/{}", enc(room), unique("txn"));
        let v = self.ok(reqwest::Method::PUT, &path, Some(content)).await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send(room, "m.room.message", json!({"msgtype": "m.text", "body": body})).await
    }

    /// Redacts `event_id`; returns the redaction's event id.
    pub async fn redact(&self, room: &str, event_id: &str) -> String {
        let path = format!("/rooms/{}/redact/{}/{}", enc(room), enc(event_id), unique("txn"));
        let v = self.ok(reqwest::Method::PUT, &path, Some(json!({"reason": "test"}))).await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_state(&self, room: &str, event_type: &str, content: Value) {
        self.ok(reqwest::Method::PUT, &format!("/rooms/{}/state/{event_type}/", enc(room)), Some(content)).await;
    }

    /// The room's timeline, oldest first (up to 500 events).
    pub async fn timeline(&self, room: &str) -> Vec<Value> {
        let v = self.ok(reqwest::Method::GET, &format!("/rooms/{}/messages?dir=b&limit=500", enc(room)), None).await;
        let mut events = v["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// The current membership of `user` in `room` ("join", "invite", "leave", …).
    pub async fn membership(&self, room: &str, user: &str) -> Option<String> {
        let (status, v) = self
            .request(reqwest::Method::GET, &format!("/rooms/{}/state/m.room.member/{}", enc(room), enc(user)), None)
            .await;
        (status == 200).then(|| v["membership"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn wait_membership(&self, room: &str, user: &str, want: &str) {
        wait_for(&format!("{user} to {want} {room}"), Duration::from_secs(30), || async {
            (self.membership(room, user).await.as_deref() == Some(want)).then_some(())
        })
        .await
    }

    /// Messages from `sender` replying to `event_id`.
    pub async fn replies_to(&self, room: &str, sender: &str, event_id: &str) -> Vec<Value> {
        self.timeline(room)
            .await
            .into_iter()
            .filter(|e| e["sender"] == sender && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id)
            .collect()
    }

    /// Waits for the first reply from `sender` to `event_id` and returns it.
    pub async fn wait_reply(&self, room: &str, sender: &str, event_id: &str) -> Value {
        wait_for(&format!("a reply from {sender} to {event_id}"), Duration::from_secs(30), || async {
            self.replies_to(room, sender, event_id).await.into_iter().next()
        })
        .await
    }

    /// The messages `sender` posted in `room` (edits left out), oldest first.
    pub async fn messages_from(&self, room: &str, sender: &str) -> Vec<Value> {
        self.timeline(room)
            .await
            .into_iter()
            .filter(|e| {
                e["type"] == "m.room.message"
                    && e["sender"] == sender
                    && e["content"]["m.relates_to"]["rel_type"] != "m.replace"
            })
            .collect()
    }

    /// The text message `event_id` shows now: its last edit's, else its own.
    pub async fn latest_text(&self, room: &str, event_id: &str) -> Option<String> {
        let timeline = self.timeline(room).await;
        let edit = timeline.iter().rev().find(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == event_id
        });
        match edit {
            Some(e) => e["content"]["m.new_content"]["body"].as_str().map(str::to_owned),
            None => timeline.iter().find(|e| e["event_id"] == event_id)?["content"]["body"].as_str().map(str::to_owned),
        }
    }

    /// Waits until message `event_id` shows a text containing `want`, and returns that text.
    pub async fn wait_text(&self, room: &str, event_id: &str, want: &str) -> String {
        wait_for(&format!("{event_id} to show {want:?}"), Duration::from_secs(60), || async {
            self.latest_text(room, event_id).await.filter(|t| t.contains(want))
        })
        .await
    }

    /// A room with the agent and a second person, so it is not a direct chat.
    pub async fn group_room_with(&self, agent_user: &str) -> String {
        let other = User::register("bob").await;
        let room = self.room_with(agent_user).await;
        self.invite(&room, &other.user_id).await;
        other.join(&room).await;
        room
    }

    /// Creates a room with the agent in it (invited and joined).
    pub async fn room_with(&self, agent_user: &str) -> String {
        let room = self.create_room(&[agent_user]).await;
        self.wait_membership(&room, agent_user, "join").await;
        room
    }
}

pub fn user_id(localpart: &str) -> String {
    format!("@{localpart}:{SERVER_NAME}")
}

/// Percent-encodes a path segment (room and user ids contain `!`, `:`, `@`, `#`).
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
