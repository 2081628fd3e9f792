//! Bad input, gathered in one place (issue 18): each hostile input enters where the homeserver
//! sends it (the transaction endpoint) beside a `!ping` in the same transaction, on SQLite and on
//! PostgreSQL. Each is stored and handled, or refused with its status and errcode; the ping beside
//! it is answered exactly once, a retry of the transaction changes nothing, and nothing is left in
//! the inbox or set aside as a dead letter. Where an input is hostile only through the real
//! homeserver (a member's message), it goes through Synapse.

mod common;

use common::agent::{Agent, Options};
use common::client::User;
use common::postgres::postgres;
use common::synapse::synapse;
use reqwest::Method;
use serde_json::{Value, json};

fn body(e: &Value) -> &str {
    e["content"]["body"].as_str().unwrap_or_default()
}

/// One hostile input; its event is written as raw JSON beside it (some inputs cannot be
/// written with `json!`), with `{room}`, `{sender}` and `{id}` filled in when sent.
struct Case {
    name: &'static str,
    /// The txn id as it appears in the URL (percent-encoded).
    txn: &'static str,
}

const MESSAGE: &str = r#"{"type": "m.room.message", "room_id": "{room}", "event_id": "{id}", "sender": "{sender}",
    "origin_server_ts": 1700000000000, "content": {"msgtype": "m.text", "body": BODY}}"#;

fn cases() -> Vec<(Case, String)> {
    let message = |body: &str| MESSAGE.replace("BODY", body);
    let nested = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    vec![
        (Case { name: "a NUL in the body", txn: "nul-body" }, message(r#""a\u0000b, @agent 2+2?""#)),
        (Case { name: "a NUL in the txn id", txn: "nul%00txn" }, message(r#""hello""#)),
        (Case { name: "a lone surrogate escape", txn: "surrogate" }, message(r#""half \ud800 a pair""#)),
        (Case { name: "a pair and astral text", txn: "astral" }, message(r#""\ud83d\ude00 \u202ertl\u200b zw""#)),
        (Case { name: "a body that is not a string", txn: "not-string" }, message(r#"{"a": [1, 2]}"#)),
        (Case { name: "content nested 300 deep", txn: "nested" }, message(&nested)),
        (Case { name: "a 200 KB message", txn: "long" }, message(&format!("\"{}\"", "long ".repeat(40_000)))),
        (Case { name: "a command with a 100 KB argument", txn: "long-arg" }, {
            message(&format!("\"!help {}\"", "x".repeat(100_000)))
        }),
        (
            Case { name: "ids written with JSON escapes", txn: "escaped" },
            MESSAGE
                .replace("\"{room}\"", "\"ESCAPED_ROOM\"")
                .replace("\"{id}\"", "\"\\u0024{id}\"")
                .replace("BODY", r#""escaped ids""#),
        ),
        (
            Case { name: "an event without an event id", txn: "no-id" },
            r#"{"type": "m.room.message", "room_id": "{room}", "sender": "{sender}", "content": {"body": "x"}}"#
                .to_owned(),
        ),
        (Case { name: "an event that is not an object", txn: "not-object" }, "5".to_owned()),
        (
            Case { name: "an event whose content is a string", txn: "content-string" },
            r#"{"type": "m.room.message", "room_id": "{room}", "event_id": "{id}", "sender": "{sender}",
                "origin_server_ts": 1700000000000, "content": "x"}"#
                .to_owned(),
        ),
        (
            Case { name: "an unknown event type with odd fields", txn: "odd-type" },
            r#"{"type": "x.\u0000\"odd", "room_id": "{room}", "event_id": "{id}", "sender": "{sender}",
                "origin_server_ts": -1, "content": {"body": null}, "unsigned": 5}"#
                .to_owned(),
        ),
        (
            Case { name: "a 4,000-character event id", txn: "long-id" },
            MESSAGE.replace("{id}", &format!("${}", "i".repeat(4000))).replace("BODY", r#""long id""#),
        ),
    ]
}

/// Sends every case with a `!ping` beside it and checks the promise of the module's doc.
async fn hostile_events_beside_a_ping(database_url: Option<String>) {
    let agent = Agent::start(synapse().slot(), Options { database_url, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await;
    for (n, (case, event)) in cases().into_iter().enumerate() {
        let id = format!("$bad-{n}");
        let event = event
            .replace("{room}", &room)
            .replace("ESCAPED_ROOM", &room.replacen('!', "\\u0021", 1))
            .replace("{sender}", &alice.user_id)
            .replace("{id}", &id);
        let ping = format!("$bad-{n}-ping");
        let ping_event = json!({"type": "m.room.message", "room_id": room, "event_id": ping, "sender": alice.user_id,
            "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": "!ping"}});
        let txn_body = format!(r#"{{"events": [{event}, {ping_event}]}}"#);
        let put = || {
            agent
                .as_homeserver(Method::PUT, &format!("/_matrix/app/v1/transactions/{}-{n}", case.txn))
                .header("content-type", "application/json")
                .body(txn_body.clone())
                .send()
        };
        let first = put().await.unwrap();
        assert_eq!(first.status(), 200, "{}: {}", case.name, first.text().await.unwrap());
        assert_eq!(put().await.unwrap().status(), 200, "{}: the retry is acknowledged too", case.name);
        let pong = alice.wait_reply(&room, &agent.user_id(), &ping).await;
        assert!(body(&pong).contains("pong"), "{}: {pong}", case.name);
        // Handled in order: a ping after the case's transaction was answered only once both were.
        let after = alice.send_text(&room, "!ping").await;
        alice.wait_reply(&room, &agent.user_id(), &after).await;
        let pongs = alice.replies_to(&room, &agent.user_id(), &ping).await;
        assert_eq!(pongs.len(), 1, "{}: the ping answered once: {pongs:?}", case.name);
    }
    let store = agent.store().await;
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);
    store.close().await;
    assert!(letters.is_empty(), "nothing set aside: {letters:?}");
}

#[tokio::test]
async fn hostile_events_are_stored_and_handled_and_the_ping_beside_each_answered_once_on_sqlite() {
    hostile_events_beside_a_ping(None).await;
}

#[tokio::test]
async fn hostile_events_are_stored_and_handled_and_the_ping_beside_each_answered_once_on_postgresql() {
    hostile_events_beside_a_ping(Some(postgres().fresh_database().await)).await;
}

/// Bodies that are not transactions are refused with their status and errcode, store nothing,
/// and leave the endpoint working: a ping sent after them is answered.
async fn refused_bodies(database_url: Option<String>) {
    let env = vec![("CONCLAVE_APPSERVICE__MAX_BODY_BYTES".to_owned(), "4096".to_owned())];
    let options = Options { database_url, env, ..Options::default() };
    let agent = Agent::start(synapse().slot(), options).await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await;
    let too_large = format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(8192));
    let cases: [(&str, Vec<u8>, u16, &str); 8] = [
        ("not JSON", b"{not json".to_vec(), 400, "M_NOT_JSON"),
        ("empty", Vec::new(), 400, "M_NOT_JSON"),
        ("trailing bytes", br#"{"events": []} {}"#.to_vec(), 400, "M_NOT_JSON"),
        ("invalid UTF-8", b"{\"events\": [], \"x\": \"\xff\xfe\"}".to_vec(), 400, "M_NOT_JSON"),
        ("events not a list", br#"{"events": 5}"#.to_vec(), 400, "M_BAD_JSON"),
        ("no events", b"{}".to_vec(), 400, "M_BAD_JSON"),
        ("a list, not an object", b"[]".to_vec(), 400, "M_BAD_JSON"),
        ("over appservice.max_body_bytes", too_large.into_bytes(), 413, "M_TOO_LARGE"),
    ];
    for (n, (name, bytes, status, errcode)) in cases.into_iter().enumerate() {
        let r = agent
            .as_homeserver(Method::PUT, &format!("/_matrix/app/v1/transactions/refused-{n}"))
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{name}: the error is not JSON: {e}"));
        assert_eq!((got, v["errcode"].as_str().unwrap_or_default()), (status, errcode), "{name}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: says why: {v}");
    }
    assert_eq!(agent.inbox_len().await, 0);
    let ping = alice.send_text(&room, "!ping").await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &ping).await).contains("pong"));
}

#[tokio::test]
async fn bodies_that_are_not_transactions_are_refused_with_their_errcode_on_sqlite() {
    refused_bodies(None).await;
}

#[tokio::test]
async fn bodies_that_are_not_transactions_are_refused_with_their_errcode_on_postgresql() {
    refused_bodies(Some(postgres().fresh_database().await)).await;
}

/// What a member can make the real homeserver deliver: a message whose content nests as deep as
/// Synapse takes, and one with a NUL. The room goes on:
/// the ping after them is answered, once.
#[tokio::test]
async fn a_members_unreadable_messages_do_not_stop_the_room() {
    let agent = Agent::start(synapse().slot(), Options::default()).await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await;
    // As deep as Synapse takes (it refuses some depth with "Invalid event JSON").
    let mut accepted = None;
    for depth in [300, 200, 150, 129, 100, 64] {
        let mut deep = json!("bottom");
        for _ in 0..depth {
            deep = json!([deep]);
        }
        let path = format!("/rooms/{}/send/m.room.message/deep-{depth}", common::client::enc(&room));
        let content = json!({"msgtype": "m.text", "body": "deep", "x": deep});
        if alice.request(Method::PUT, &path, Some(content)).await.0 == 200 {
            accepted = Some(depth);
            break;
        }
    }
    eprintln!("Synapse took a message nested {accepted:?} deep");
    assert!(accepted.is_some(), "Synapse took none of the deep messages");
    alice.send(&room, "m.room.message", json!({"msgtype": "m.text", "body": "a\u{0}b"})).await;
    let ping = alice.send_text(&room, "!ping").await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &ping).await).contains("pong"));
    let after = alice.send_text(&room, "!ping").await;
    alice.wait_reply(&room, &agent.user_id(), &after).await;
    assert_eq!(alice.replies_to(&room, &agent.user_id(), &ping).await.len(), 1);
}

/// A fault in one event's writes (injected: a SQLite trigger refuses its index row) fails the
/// commit of the batch it is in. Its neighbours are handled again, carefully, and stored once
/// each; the faulty event alone waits its back-off and is set aside after `dispatch.max_attempts`
/// with the reason; the reply sent before the failed commit is not sent twice.
#[tokio::test]
async fn a_fault_in_one_events_writes_sets_only_that_event_aside_with_its_reason() {
    let env = vec![("CONCLAVE_DISPATCH__MAX_ATTEMPTS".to_owned(), "3".to_owned())];
    let agent = Agent::start(synapse().slot(), Options { env, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await;
    let first = alice.send_text(&room, "!ping").await;
    alice.wait_reply(&room, &agent.user_id(), &first).await;
    let db = rusqlite::Connection::open(agent.dir.join("agent.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER injected_fault BEFORE INSERT ON index_jobs WHEN NEW.body LIKE '%poison%' \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END;",
    )
    .unwrap();

    let message = |id: &str, body: &str| {
        json!({"type": "m.room.message", "room_id": room, "event_id": id, "sender": alice.user_id,
               "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": body}})
    };
    let events = json!({"events": [message("$fault-1", "one"), message("$fault-2", "two poison"),
                                    message("$fault-3", "three"), message("$fault-ping", "!ping")]});
    let r =
        agent.as_homeserver(Method::PUT, "/_matrix/app/v1/transactions/fault-1").json(&events).send().await.unwrap();
    assert_eq!(r.status(), 200);
    common::wait_for("the faulty event to be set aside", std::time::Duration::from_secs(60), || async {
        agent.log().contains("giving up on an event event_id=$fault-2").then_some(())
    })
    .await;
    let pong = alice.wait_reply(&room, &agent.user_id(), "$fault-ping").await;
    assert!(body(&pong).contains("pong"), "{pong}");
    let after = alice.send_text(&room, "!ping").await;
    alice.wait_reply(&room, &agent.user_id(), &after).await;
    assert_eq!(alice.replies_to(&room, &agent.user_id(), "$fault-ping").await.len(), 1, "the ping answered once");

    let store = agent.store().await;
    let letters = store.dead_letters().await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);
    store.close().await;
    assert_eq!(letters.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["$fault-2"], "{letters:?}");
    assert!(
        letters[0].error.contains("could not be stored") && letters[0].error.contains("injected fault"),
        "{letters:?}"
    );
    let stored = |id: &str| -> i64 {
        db.query_row("SELECT COUNT(*) FROM index_jobs WHERE event_id = ?1", [id], |row| row.get(0)).unwrap()
    };
    assert_eq!((stored("$fault-1"), stored("$fault-2"), stored("$fault-3")), (1, 0, 1), "the neighbours are kept");
}

/// Text an admin or a member gives the agent comes back as text: a prompt holding HTML, a link,
/// emphasis and `@room` is shown by `!prompt` with none of them live, and so is an unknown
/// command's name (issue 18 point 2).
#[tokio::test]
async fn admin_and_member_text_the_agent_shows_back_is_text() {
    let alice = User::register("alice").await;
    let extra = format!("[access]\nadmins = [\"{}\"]\n", alice.user_id);
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let room = alice.room_with(&agent.user_id()).await;
    let hostile = "<img src=x onerror=alert(1)> [click](https://evil.example) **loud** @room";
    let say = |text: String| {
        let (alice, room, agent_id) = (&alice, &room, agent.user_id());
        async move {
            let event = alice.send_text(room, &text).await;
            alice.wait_reply(room, &agent_id, &event).await["content"].clone()
        }
    };
    assert!(say(format!("!prompt {hostile}")).await["body"].as_str().unwrap().contains("Saved"));
    for shown in [say("!prompt".to_owned()).await, say("!x<img_src=x>[a](https://evil.example)".to_owned()).await] {
        let html = shown["formatted_body"].as_str().unwrap_or_default();
        for live in ["<img", "<a ", "<strong>", "<em>"] {
            assert!(!html.contains(live), "{live} in {html}");
        }
        let body = shown["body"].as_str().unwrap();
        assert!(!body.contains("@room"), "a live @room: {body}");
        assert!(shown.get("m.mentions").is_none_or(|m| m.get("room").is_none()), "{shown}");
    }
}
