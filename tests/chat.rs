//! Talking to @agent on a real Synapse, with the fake Ollama as the model server.

mod common;

use common::agent::{Agent, Options};
use common::client::User;
use common::fake_llm::FakeLlm;
use common::synapse::synapse;
use common::wait_for;
use serde_json::{Value, json};
use std::time::Duration;

fn body(e: &Value) -> &str {
    e["content"]["body"].as_str().unwrap_or_default()
}

async fn agent_with(llm_url: &str, model: &str) -> Agent {
    let extra = format!("[llm]\nbase_url = \"{llm_url}\"\nchat_model = \"{model}\"\nedit_interval_ms = 100\n");
    Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await
}

/// A room with the agent and a second human, so it is not a direct chat.
async fn group_room(alice: &User, agent: &Agent) -> String {
    let bob = User::register("bob").await;
    let room = alice.room_with(&agent.user_id()).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    room
}

/// The latest text of the agent's answer to `trigger` (its last edit, if any).
async fn answer_text(user: &User, room: &str, agent: &Agent, trigger: &str) -> Option<String> {
    let timeline = user.timeline(room).await;
    let first = timeline.iter().find(|e| {
        e["sender"] == agent.user_id().as_str() && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == trigger
    })?;
    let id = first["event_id"].as_str()?;
    let last_edit = timeline.iter().rev().find(|e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace" && e["content"]["m.relates_to"]["event_id"] == id
    });
    Some(last_edit.map_or_else(
        || body(first).to_owned(),
        |e| e["content"]["m.new_content"]["body"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn wait_answer(user: &User, room: &str, agent: &Agent, trigger: &str, want: &str) -> String {
    wait_for(&format!("an answer containing {want:?}"), Duration::from_secs(30), || async {
        answer_text(user, room, agent, trigger).await.filter(|t| t.contains(want))
    })
    .await
}

#[tokio::test]
async fn mention_gets_a_streamed_and_edited_answer() {
    let llm = FakeLlm::start().await;
    let reply = (1..=60).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    llm.set_reply(&reply);
    // 1.2 s of streaming against edits at most every 100 ms: several edits even on a busy machine.
    llm.set_word_delay(Duration::from_millis(20));
    let agent = agent_with(&llm.url, "llama3.1:8b").await;
    let alice = User::register("alice").await;
    let room = group_room(&alice, &agent).await;

    let content = json!({"msgtype": "m.text", "body": "Agent: summarise the plan",
                         "m.mentions": {"user_ids": [agent.user_id()]}});
    let question = alice.send(&room, "m.room.message", content).await;
    let text = wait_answer(&alice, &room, &agent, &question, "word60").await;
    assert_eq!(text, reply);

    // Streamed: the first message showed a part, then edits grew it.
    let timeline = alice.timeline(&room).await;
    let first = timeline
        .iter()
        .find(|e| e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == question.as_str())
        .unwrap();
    assert!(body(first).len() < reply.len(), "the first message is not the whole answer: {}", body(first));
    let edits = timeline.iter().filter(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace").count();
    assert!(edits >= 2, "expected several edits, got {edits}");

    let request = &llm.requests()[0];
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"].as_str().unwrap().contains("Today is"));
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    assert!(last["content"].as_str().unwrap().ends_with(": summarise the plan"), "{last}");
}

#[tokio::test]
async fn direct_chat_needs_no_mention_and_remembers_the_exchange() {
    let llm = FakeLlm::start().await;
    let agent = agent_with(&llm.url, "llama3.1:8b").await;
    let alice = User::register("alice").await;
    let room = alice.room_with(&agent.user_id()).await; // alice and the agent only

    let first = alice.send_text(&room, "my name is Zed").await;
    wait_answer(&alice, &room, &agent, &first, "my name is Zed").await;
    let second = alice.send_text(&room, "what is my name?").await;
    wait_answer(&alice, &room, &agent, &second, "what is my name?").await;

    let requests = llm.requests();
    let messages = requests.last().unwrap()["messages"].as_array().unwrap().clone();
    let earlier: Vec<(&str, &str)> =
        messages.iter().map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap())).collect();
    assert!(earlier.iter().any(|(r, c)| *r == "user" && c.ends_with("my name is Zed")), "{earlier:?}");
    assert!(earlier.iter().any(|(r, c)| *r == "assistant" && c.contains("my name is Zed")), "{earlier:?}");
}

#[tokio::test]
async fn threads_stay_threaded_and_chatter_is_ignored() {
    let llm = FakeLlm::start().await;
    let agent = agent_with(&llm.url, "qwen3:think").await;
    let alice = User::register("alice").await;
    let room = group_room(&alice, &agent).await;

    let chatter = alice.send_text(&room, "just talking among ourselves").await;
    let root = alice.send_text(&room, "release planning").await;
    let threaded = alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "agent: which day?",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                             "m.in_reply_to": {"event_id": root}}}),
        )
        .await;
    wait_answer(&alice, &room, &agent, &threaded, "which day?").await;

    let timeline = alice.timeline(&room).await;
    let answer = timeline
        .iter()
        .find(|e| e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == threaded.as_str())
        .unwrap();
    assert_eq!(answer["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(answer["content"]["m.relates_to"]["event_id"], root.as_str());
    // The model's <think> block is never shown, in the message or any edit.
    assert!(timeline.iter().all(|e| !e.to_string().contains("think")), "a think block leaked");
    assert!(alice.replies_to(&room, &agent.user_id(), &chatter).await.is_empty(), "answered plain chatter");
    assert_eq!(llm.requests().len(), 1, "only the addressed message reached the model");
}

#[tokio::test]
async fn backend_failures_get_clear_replies_and_the_agent_keeps_serving() {
    let llm = FakeLlm::start().await;
    let down = format!("http://127.0.0.1:{}/v1", common::free_port());
    let agent = agent_with(&down, "llama3.1:8b").await;
    let alice = User::register("alice").await;
    let room = group_room(&alice, &agent).await;

    let asked = alice.send_text(&room, "!ask are you there?").await;
    let reply = alice.wait_reply(&room, &agent.user_id(), &asked).await;
    assert!(body(&reply).contains("could not answer") && body(&reply).contains(&down), "{reply}");
    let ping = alice.send_text(&room, "!ping").await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &ping).await).contains("pong"));

    // An unknown model: the reply lists the ones that exist.
    let agent2 = agent_with(&llm.url, "no-such-model").await;
    let room2 = group_room(&alice, &agent2).await;
    let asked = alice.send_text(&room2, "!ask hello?").await;
    let reply = alice.wait_reply(&room2, &agent2.user_id(), &asked).await;
    assert!(body(&reply).contains("no-such-model") && body(&reply).contains("`llama3.1:8b`"), "{reply}");

    // A stream cut mid-way keeps what arrived and says so.
    let agent3 = agent_with(&llm.url, "cut").await;
    let room3 = group_room(&alice, &agent3).await;
    let asked = alice.send_text(&room3, "!ask tell me everything").await;
    let text = wait_answer(&alice, &room3, &agent3, &asked, "cut off").await;
    assert!(text.starts_with("You said:"), "{text}");
}
