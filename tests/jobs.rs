//! Slow work off the room lane, on a real Synapse with a slow fake model: quick commands are
//! answered while answers stream, queued work is answered in order and fairly, a crash mid-answer
//! leaves one completed answer, cancels stop work, and the queue bounds refuse clearly.

mod common;

use common::agent::{Agent, Options};
use common::client::User;
use common::fake_llm::FakeLlm;
use common::synapse::synapse;
use common::wait_for;
use serde_json::Value;
use std::time::Duration;

/// An answer of `words` words after "You said: <question>", one word every `delay`.
fn slow_reply(llm: &FakeLlm, words: usize, delay: Duration) {
    let tail: Vec<String> = (1..=words).map(|i| format!("w{i}")).collect();
    llm.set_reply(&format!("You said: {{last}} {} END", tail.join(" ")));
    llm.set_word_delay(delay);
}

async fn agent(llm: &FakeLlm, extra: &str) -> Agent {
    let extra = format!(
        "[llm]\nbase_url = \"{}\"\nchat_model = \"llama3.1:8b\"\nedit_interval_ms = 200\nuser_requests_per_minute = 0\n{extra}",
        llm.url
    );
    Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await
}

fn ts(e: &Value) -> i64 {
    e["origin_server_ts"].as_i64().unwrap()
}

fn body(e: &Value) -> &str {
    e["content"]["body"].as_str().unwrap_or_default()
}

/// The agent's replies to `trigger` (edits left out), oldest first.
async fn replies(user: &User, room: &str, agent: &Agent, trigger: &str) -> Vec<Value> {
    user.replies_to(room, &agent.user_id(), trigger)
        .await
        .into_iter()
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] != "m.replace")
        .collect()
}

/// The reply to `trigger` that said `text` first or shows it now, once there is one.
async fn reply_starting(user: &User, room: &str, agent: &Agent, trigger: &str, text: &str) -> Value {
    wait_for(&format!("a reply to {trigger} showing {text:?}"), Duration::from_secs(60), || async {
        for reply in replies(user, room, agent, trigger).await {
            let now = user.latest_text(room, reply["event_id"].as_str()?).await.unwrap_or_default();
            if body(&reply).contains(text) || now.contains(text) {
                return Some(reply);
            }
        }
        None
    })
    .await
}

/// Alice and Bob in a room with the agent.
async fn alice_and_bob(agent: &Agent) -> (User, User, String) {
    let alice = User::register("alice").await;
    let bob = User::register("bob").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    (alice, bob, room)
}

/// Sends `!ping` and returns the time from the ping to the pong, as the homeserver stamped them.
async fn ping_rtt(user: &User, room: &str, agent: &Agent) -> i64 {
    let ping = user.send_text(room, "!ping").await;
    let pong = user.wait_reply(room, &agent.user_id(), &ping).await;
    assert!(body(&pong).contains("pong"), "{pong}");
    let ping_event = user.timeline(room).await.into_iter().find(|e| e["event_id"] == ping.as_str()).unwrap();
    ts(&pong) - ts(&ping_event)
}

#[tokio::test]
async fn ping_is_answered_while_an_answer_streams_in_the_same_room() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 40, Duration::from_millis(500)); // about 20 s
    let agent = agent(&llm, "").await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;

    let question = alice.send_text(&room, "!ask tell me everything").await;
    let answer = reply_starting(&alice, &room, &agent, &question, "You said").await;
    let rtt = ping_rtt(&alice, &room, &agent).await;
    assert!(rtt < 1000, "pong took {rtt} ms while an answer streamed");
    let text = alice.latest_text(&room, answer["event_id"].as_str().unwrap()).await.unwrap();
    assert!(!text.contains("END"), "the answer should still be streaming: {text}");
}

#[tokio::test]
async fn ten_rooms_waiting_on_slow_answers_do_not_hold_up_an_eleventh() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 40, Duration::from_millis(500));
    let agent = agent(&llm, "max_concurrent = 2\n").await;
    let mut waiting = Vec::new();
    for i in 0..10 {
        let user = User::register(&format!("asker{i}")).await;
        let room = user.group_room_with(&agent.user_id()).await;
        let question = user.send_text(&room, &format!("!ask question {i}")).await;
        waiting.push((user, room, question));
    }
    let carol = User::register("carol").await;
    let quiet = carol.group_room_with(&agent.user_id()).await;
    let rtt = ping_rtt(&carol, &quiet, &agent).await;
    assert!(rtt < 1000, "pong took {rtt} ms beside ten rooms waiting on the model");

    // Two answer; the other eight each got one "queued" status, nothing more.
    for (user, room, question) in &waiting {
        let first = wait_for("a first reply", Duration::from_secs(30), || async {
            replies(user, room, &agent, question).await.into_iter().next()
        })
        .await;
        let text = user.latest_text(room, first["event_id"].as_str().unwrap()).await.unwrap_or_default();
        assert!(text.starts_with("You") || body(&first).starts_with("Queued"), "{text}");
    }
    let queued = {
        let mut n = 0;
        for (user, room, question) in &waiting {
            let all = replies(user, room, &agent, question).await;
            assert!(all.len() <= 2, "one status and one answer at most: {all:?}");
            n += all.iter().filter(|e| body(e).contains("Queued")).count();
        }
        n
    };
    assert!(queued >= 8, "{queued} queued notices");
}

#[tokio::test]
async fn queued_questions_are_all_answered_in_order_per_room_and_rooms_take_turns() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 6, Duration::from_millis(100));
    let agent = agent(&llm, "max_concurrent = 1\n").await;
    let alice = User::register("alice").await;
    let bob = User::register("bob").await;
    let room_a = alice.group_room_with(&agent.user_id()).await;
    let room_b = bob.group_room_with(&agent.user_id()).await;

    let mut asked = Vec::new();
    for i in 1..=3 {
        asked.push(alice.send_text(&room_a, &format!("!ask a{i}")).await);
    }
    let from_b = bob.send_text(&room_b, "!ask b1").await;

    let mut answered_at = Vec::new();
    for (i, question) in asked.iter().enumerate() {
        let answer = reply_starting(&alice, &room_a, &agent, question, "You said").await;
        let text = alice.wait_text(&room_a, answer["event_id"].as_str().unwrap(), "END").await;
        assert!(text.contains(&format!("a{}", i + 1)), "answer {i} is about its own question: {text}");
        answered_at.push(ts(&answer));
    }
    assert!(answered_at.windows(2).all(|w| w[0] < w[1]), "answers start in the order asked: {answered_at:?}");
    let b_answer = reply_starting(&bob, &room_b, &agent, &from_b, "You said").await;
    bob.wait_text(&room_b, b_answer["event_id"].as_str().unwrap(), "END").await;
    // b asked after a's three, but its room's turn came before a's last.
    assert!(ts(&b_answer) < answered_at[2], "room b waited for all of room a");

    // A question that waited shows one status message that ends as done.
    let status = reply_starting(&alice, &room_a, &agent, &asked[2], "Queued").await;
    alice.wait_text(&room_a, status["event_id"].as_str().unwrap(), "Done.").await;
    assert_eq!(replies(&alice, &room_a, &agent, &asked[2]).await.len(), 2, "a status and the answer");
}

#[tokio::test]
async fn a_kill_mid_answer_leaves_one_completed_answer_after_restart() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 30, Duration::from_millis(200)); // about 6 s
    let mut agent = agent(&llm, "").await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;

    let question = alice.send_text(&room, "!ask a long one").await;
    let answer = reply_starting(&alice, &room, &agent, &question, "You said").await;
    let answer_id = answer["event_id"].as_str().unwrap().to_owned();
    agent.kill9();
    let partial = alice.latest_text(&room, &answer_id).await.unwrap();
    assert!(!partial.contains("END"), "killed mid-answer: {partial}");

    agent.spawn().await;
    let text = alice.wait_text(&room, &answer_id, "END").await;
    assert!(text.contains("w30"), "{text}");
    let all = replies(&alice, &room, &agent, &question).await;
    assert_eq!(all.len(), 1, "exactly one answer message: {all:?}");
    assert_eq!(llm.requests().len(), 2, "asked again once after the restart");
}

#[tokio::test]
async fn cancel_by_command_and_by_redaction_stops_the_work() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 40, Duration::from_millis(500));
    let agent = agent(&llm, "max_concurrent = 1\n").await;
    let (alice, bob, room) = alice_and_bob(&agent).await;

    // A running answer, cancelled by a reply to it.
    let first = alice.send_text(&room, "!ask first").await;
    let answer = reply_starting(&alice, &room, &agent, &first, "You said").await;
    let answer_id = answer["event_id"].as_str().unwrap().to_owned();
    // A second one waits behind it; !jobs shows both.
    let second = alice.send_text(&room, "!ask second").await;
    let status = reply_starting(&alice, &room, &agent, &second, "Queued").await;
    let jobs = alice.send_text(&room, "!jobs").await;
    let listed = body(&alice.wait_reply(&room, &agent.user_id(), &jobs).await).to_owned();
    assert!(listed.contains("running") && listed.contains("waiting (1st in line here)"), "{listed}");
    // Someone else cannot cancel alice's work.
    let meddle = bob
        .send(
            &room,
            "m.room.message",
            serde_json::json!({"msgtype": "m.text", "body": "!cancel",
            "m.relates_to": {"m.in_reply_to": {"event_id": first}}}),
        )
        .await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &meddle).await).contains("Only"));
    let cancel = alice
        .send(
            &room,
            "m.room.message",
            serde_json::json!({"msgtype": "m.text", "body": "!cancel",
            "m.relates_to": {"m.in_reply_to": {"event_id": answer_id}}}),
        )
        .await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &cancel).await).contains("Cancelling"));
    let text = alice.wait_text(&room, &answer_id, "(cancelled)").await;
    assert!(!text.contains("END"), "{text}");

    // The queued one starts next; cancelled without a reply (the asker's latest), by redaction.
    let second_answer = reply_starting(&alice, &room, &agent, &second, "You said").await;
    alice.redact(&room, &second).await;
    alice.wait_text(&room, second_answer["event_id"].as_str().unwrap(), "(cancelled)").await;
    alice.wait_text(&room, status["event_id"].as_str().unwrap(), "Cancelled by").await;

    // A queued job cancelled before it starts: its status says so, and it never reaches the model.
    let third = alice.send_text(&room, "!ask third").await;
    let third_answer = reply_starting(&alice, &room, &agent, &third, "You said").await;
    let fourth = alice.send_text(&room, "!ask fourth").await;
    let fourth_status = reply_starting(&alice, &room, &agent, &fourth, "Queued").await;
    let cancel = alice.send_text(&room, "!cancel").await;
    alice.wait_reply(&room, &agent.user_id(), &cancel).await;
    alice.wait_text(&room, fourth_status["event_id"].as_str().unwrap(), "Cancelled by").await;
    alice.wait_text(&room, third_answer["event_id"].as_str().unwrap(), "END").await;
    let asked: Vec<String> = llm.requests().iter().map(|r| r.to_string()).collect();
    assert!(!asked.iter().any(|r| r.contains("fourth")), "a cancelled job never reached the model");
}

#[tokio::test]
async fn the_queue_bounds_refuse_clearly() {
    let llm = FakeLlm::start().await;
    slow_reply(&llm, 40, Duration::from_millis(500));
    let agent = agent(&llm, "max_concurrent = 1\n[jobs]\nmax_queued_per_user = 2\nmax_queued_per_room = 3\n").await;
    let (alice, bob, room) = alice_and_bob(&agent).await;

    let mut asked = Vec::new();
    for i in 0..2 {
        let q = alice.send_text(&room, &format!("!ask alice {i}")).await;
        alice.wait_reply(&room, &agent.user_id(), &q).await;
        asked.push(q);
    }
    let over = alice.send_text(&room, "!ask one too many").await;
    let refusal = alice.wait_reply(&room, &agent.user_id(), &over).await;
    assert!(body(&refusal).contains("You already have 2 requests"), "{refusal}");
    let bobs = bob.send_text(&room, "!ask bob 1").await;
    alice.wait_reply(&room, &agent.user_id(), &bobs).await;
    let full = bob.send_text(&room, "!ask bob 2").await;
    let refusal = alice.wait_reply(&room, &agent.user_id(), &full).await;
    assert!(body(&refusal).contains("This room already has 3 requests"), "{refusal}");
    assert_eq!(replies(&alice, &room, &agent, &full).await.len(), 1, "the refusal is the one reply");
}
