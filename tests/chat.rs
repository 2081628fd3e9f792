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

/// The latest text (last edit applied) of each of the agent's replies to `trigger`.
async fn answer_texts(user: &User, room: &str, agent: &Agent, trigger: &str) -> Vec<String> {
    let timeline = user.timeline(room).await;
    let replies = timeline.iter().filter(|e| {
        e["sender"] == agent.user_id().as_str() && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == trigger
    });
    replies
        .map(|first| {
            let id = first["event_id"].as_str().unwrap_or_default();
            let last_edit = timeline.iter().rev().find(|e| {
                e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                    && e["content"]["m.relates_to"]["event_id"] == id
            });
            last_edit.map_or_else(
                || body(first).to_owned(),
                |e| e["content"]["m.new_content"]["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn wait_answer(user: &User, room: &str, agent: &Agent, trigger: &str, want: &str) -> String {
    wait_for(&format!("an answer containing {want:?}"), Duration::from_secs(30), || async {
        answer_texts(user, room, agent, trigger).await.into_iter().find(|t| t.contains(want))
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
    let room = alice.group_room_with(&agent.user_id()).await;

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
    let room = alice.group_room_with(&agent.user_id()).await;

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
    // The model's <think> block is never shown, in the message or any edit: neither its tags nor
    // its text (the fake's reasoning is "I should be brief.").
    for leak in ["think", "should be brief"] {
        assert!(timeline.iter().all(|e| !e.to_string().contains(leak)), "{leak:?} leaked");
    }
    assert!(alice.replies_to(&room, &agent.user_id(), &chatter).await.is_empty(), "answered plain chatter");
    assert_eq!(llm.requests().len(), 1, "only the addressed message reached the model");
}

#[tokio::test]
async fn backend_failures_get_clear_replies_and_the_agent_keeps_serving() {
    let llm = FakeLlm::start().await;
    let down = format!("http://127.0.0.1:{}/v1", common::free_port());
    let agent = agent_with(&down, "llama3.1:8b").await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;

    let asked = alice.send_text(&room, "!ask are you there?").await;
    let reply = alice.wait_reply(&room, &agent.user_id(), &asked).await;
    // What failed, in words that leak no address (the address is in the agent's log).
    assert!(body(&reply).contains("could not answer") && body(&reply).contains("cannot be reached"), "{reply}");
    assert!(!reply.to_string().contains("127.0.0.1"), "an internal address in a reply: {reply}");
    let ping = alice.send_text(&room, "!ping").await;
    assert!(body(&alice.wait_reply(&room, &agent.user_id(), &ping).await).contains("pong"));

    // An unknown model: the reply lists the ones that exist.
    let agent2 = agent_with(&llm.url, "no-such-model").await;
    let room2 = alice.group_room_with(&agent2.user_id()).await;
    let asked = alice.send_text(&room2, "!ask hello?").await;
    let reply = alice.wait_reply(&room2, &agent2.user_id(), &asked).await;
    assert!(body(&reply).contains("no-such-model") && body(&reply).contains("`llama3.1:8b`"), "{reply}");

    // A stream cut mid-way keeps what arrived and says so.
    let agent3 = agent_with(&llm.url, "cut").await;
    let room3 = alice.group_room_with(&agent3.user_id()).await;
    let asked = alice.send_text(&room3, "!ask tell me everything").await;
    let text = wait_answer(&alice, &room3, &agent3, &asked, "cut off").await;
    assert!(text.starts_with("You said:"), "{text}");
    assert!(!text.contains("127.0.0.1"), "an internal address in a reply: {text}");
}

#[tokio::test]
async fn admins_set_the_rooms_model_and_prompt_and_usage_adds_up() {
    let llm = FakeLlm::start().await;
    let extra = format!(
        "[llm]\nbase_url = \"{}\"\nchat_model = \"llama3.1:8b\"\n[access]\nadmins = [\"@alice*:test.local\"]\n",
        llm.url
    );
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let bob = User::register("bob").await;
    let room = alice.room_with(&agent.user_id()).await;
    alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    let say = |user: &User, text: &str| {
        let (user, text, room, agent_id) = (user.clone(), text.to_owned(), room.clone(), agent.user_id());
        async move {
            let event = user.send_text(&room, &text).await;
            body(&user.wait_reply(&room, &agent_id, &event).await).to_owned()
        }
    };

    assert!(say(&bob, "!model qwen3:think").await.contains("Only admins"));
    assert!(say(&bob, "!prompt Be rude.").await.contains("Only admins"));
    let listed = say(&bob, "!model").await;
    assert!(listed.contains("uses `llama3.1:8b`") && listed.contains("`qwen3:think`"), "{listed}");
    assert!(say(&alice, "!model nope").await.contains("no model `nope`"));
    assert!(say(&alice, "!model qwen3:think").await.contains("now uses `qwen3:think`"));
    assert!(say(&alice, "!prompt Answer like a pirate.").await.contains("Saved"));
    assert!(say(&bob, "!prompt").await.contains("> Answer like a pirate."));

    let asked = alice.send_text(&room, "!ask where is the treasure?").await;
    wait_answer(&alice, &room, &agent, &asked, "treasure").await;
    let request = llm.requests().pop().unwrap();
    assert_eq!(request["model"], "qwen3:think");
    assert!(request["messages"][0]["content"].as_str().unwrap().starts_with("Answer like a pirate."));

    let usage = say(&alice, "!usage").await;
    assert!(usage.contains("this room: today 1 answers"), "{usage}");
    let bobs = say(&bob, "!usage").await;
    assert!(bobs.contains("you (all rooms): today 0 answers"), "{bobs}");

    assert!(say(&alice, "!prompt reset").await.contains("default instructions"));
    assert!(say(&alice, "!model reset").await.contains("default model again, `llama3.1:8b`"));
}

#[tokio::test]
async fn fallback_answers_while_the_primary_is_down() {
    let llm = FakeLlm::start().await;
    let down = format!("http://127.0.0.1:{}/v1", common::free_port());
    let extra = format!(
        "[llm]\nbase_url = \"{down}\"\nchat_model = \"big\"\n[llm.fallback]\nbase_url = \"{}\"\nchat_model = \"llama3.1:8b\"\n",
        llm.url
    );
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    for question in ["first?", "second?"] {
        let asked = alice.send_text(&room, &format!("!ask {question}")).await;
        let text = wait_answer(&alice, &room, &agent, &asked, question).await;
        assert!(text.starts_with("You said:"), "{text}");
        assert!(
            text.ends_with("(answered by the fallback model `llama3.1:8b`: the main model server is not answering)_"),
            "{text}"
        );
    }
    assert_eq!(llm.requests().len(), 2);
    assert_eq!(agent.log().matches("the model server failed").count(), 1, "the cooldown skips the primary");
}

#[tokio::test]
async fn questions_are_rate_limited_and_queued() {
    let llm = FakeLlm::start().await;
    let extra = format!(
        "[llm]\nbase_url = \"{}\"\nchat_model = \"slow\"\nmax_concurrent = 1\nuser_requests_per_minute = 2\n",
        llm.url
    );
    let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
    let alice = User::register("alice").await;
    let bob = User::register("bob").await;
    let room_a = alice.group_room_with(&agent.user_id()).await;
    let room_b = bob.group_room_with(&agent.user_id()).await;

    // One answer at a time: the second room's question waits, and says so.
    let first = alice.send_text(&room_a, "!ask one").await;
    // The first question has reached the model (whose first token takes 3 s) before the second.
    wait_for("the first question at the model", Duration::from_secs(30), || async {
        (!llm.requests().is_empty()).then_some(())
    })
    .await;
    let second = bob.send_text(&room_b, "!ask two").await;
    let queued = bob.wait_reply(&room_b, &agent.user_id(), &second).await;
    assert!(body(&queued).starts_with("Queued"), "{queued}");
    wait_answer(&alice, &room_a, &agent, &first, "You said").await;
    wait_answer(&bob, &room_b, &agent, &second, "You said").await;

    // Two questions a minute each: alice's third is refused politely.
    let again = alice.send_text(&room_a, "!ask three").await;
    wait_answer(&alice, &room_a, &agent, &again, "You said").await;
    let third = alice.send_text(&room_a, "!ask four").await;
    let refused = alice.wait_reply(&room_a, &agent.user_id(), &third).await;
    assert!(body(&refused).contains("wait a moment"), "{refused}");
}

#[tokio::test]
async fn the_replied_to_message_reaches_the_model_even_when_old() {
    let llm = FakeLlm::start().await;
    let agent = agent_with(&llm.url, "llama3.1:8b").await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    let old = alice.send_text(&room, "the launch code is 4242").await;
    for i in 0..60 {
        alice.send_text(&room, &format!("filler {i}")).await;
    }
    let question = alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "agent: what is the code?",
            "m.relates_to": {"m.in_reply_to": {"event_id": old}}}),
        )
        .await;
    wait_answer(&alice, &room, &agent, &question, "what is the code?").await;
    let request = llm.requests().pop().unwrap();
    let messages = request["messages"].as_array().unwrap();
    let before_question = &messages[messages.len() - 2];
    assert!(before_question["content"].as_str().unwrap().ends_with("the launch code is 4242"), "{request}");
    assert!(!request.to_string().contains("filler 5\""), "the old fillers are outside the window");
}
