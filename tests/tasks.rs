//! `!task` and `!board` on a real Synapse against the fake Planka, and Planka's webhook back into
//! the rooms.

mod common;

use common::agent::{Agent, Options};
use common::client::User;
use common::fake_planka::FakePlanka;
use common::synapse::synapse;
use common::wait_for;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WEBHOOK_TOKEN: &str = "webhook-token-for-tests-0123456789";

fn body(e: &Value) -> &str {
    e["content"]["body"].as_str().unwrap_or_default()
}

/// A Planka with the agent's user (API key), a human, and one board with three lists.
struct World {
    planka: FakePlanka,
    agent: Agent,
    alice: User,
    room: String,
    board: String,
    todo: String,
    doing: String,
    done: String,
    agent_planka_id: String,
    alice_planka_id: String,
    api_key: String,
}

impl World {
    async fn start() -> Self {
        let planka = FakePlanka::start().await;
        let agent_planka_id = planka.add_user("conclave-bot", "Conclave Agent", None, true);
        let key = planka.add_api_key(&agent_planka_id);
        let alice = User::register("alice").await;
        let alice_local = alice.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
        let alice_planka_id = planka.add_user(&alice_local, "Alice", Some("pw"), false);
        let project = planka.add_project("Conclave");
        let board = planka.add_board(&project, "Dev board");
        let todo = planka.add_list(&board, "To do", "active");
        let doing = planka.add_list(&board, "Doing", "active");
        let done = planka.add_list(&board, "Done", "closed");
        planka.add_board_member(&board, &agent_planka_id);
        planka.add_board_member(&board, &alice_planka_id);
        let extra = format!(
            "[planka]\nurl = \"{}\"\npublic_url = \"https://planka.example.org\"\napi_key = \"{key}\"\n\
             webhook_token = \"{WEBHOOK_TOKEN}\"\n[access]\nadmins = [\"{}\"]\n",
            planka.url, alice.user_id
        );
        let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
        let room = alice.group_room_with(&agent.user_id()).await;
        Self { planka, agent, alice, room, board, todo, doing, done, agent_planka_id, alice_planka_id, api_key: key }
    }

    /// Sends `text` as alice and returns the agent's one reply.
    async fn ask(&self, text: &str) -> String {
        self.ask_in(&self.room, text).await
    }

    async fn ask_in(&self, room: &str, text: &str) -> String {
        let id = self.alice.send_text(room, text).await;
        body(&self.alice.wait_reply(room, &self.agent.user_id(), &id).await).to_owned()
    }

    /// Sends `text` as a reply to `target`; returns the agent's reply (text and event id).
    async fn reply(&self, target: &str, text: &str) -> (String, String) {
        let content =
            json!({"msgtype": "m.text", "body": text, "m.relates_to": {"m.in_reply_to": {"event_id": target}}});
        let id = self.alice.send(&self.room, "m.room.message", content).await;
        let reply = self.alice.wait_reply(&self.room, &self.agent.user_id(), &id).await;
        (body(&reply).to_owned(), reply["event_id"].as_str().unwrap().to_owned())
    }

    /// No configured secret in the agent's log (at debug level) or in anything it said in the room
    /// (invariant 5): as_token, hs_token, the Planka API key, the webhook token.
    async fn assert_no_secret_shown(&self) {
        let said = self.alice.messages_from(&self.room, &self.agent.user_id()).await;
        let said = serde_json::to_string(&said).unwrap();
        let log = self.agent.log();
        assert!(log.contains("DEBUG"), "the log is at debug level");
        let slot = &self.agent.slot;
        for (name, secret) in [("as_token", &slot.as_token), ("hs_token", &slot.hs_token), ("api_key", &self.api_key)]
            .into_iter()
            .chain([("webhook_token", &WEBHOOK_TOKEN.to_owned())])
        {
            assert!(!log.contains(secret.as_str()), "{name} is in the agent's log");
            assert!(!said.contains(secret.as_str()), "{name} is in a message of the agent");
        }
    }

    async fn bind(&self) {
        let text = self.ask("!board bind \"Conclave/Dev board\"").await;
        assert!(text.contains("Bound this room"), "{text}");
    }

    /// Sends `command` while Planka's answers to POSTs ending in `path_end` are held back; once
    /// `wrote` sees that Planka did the write, kills the agent (it never heard back), starts it
    /// again and returns its reply to the replayed command.
    async fn crash_after_planka_wrote(
        &mut self,
        path_end: &str,
        command: &str,
        wrote: impl Fn(&FakePlanka) -> bool,
    ) -> String {
        self.planka.hold_answers(Some((Method::POST, path_end)));
        let trigger = self.alice.send_text(&self.room, command).await;
        wait_for("Planka to do the write", Duration::from_secs(30), || async { wrote(&self.planka).then_some(()) })
            .await;
        self.agent.kill9();
        self.planka.hold_answers(None);
        self.agent.spawn().await;
        body(&self.alice.wait_reply(&self.room, &self.agent.user_id(), &trigger).await).to_owned()
    }

    fn only_card(&self) -> Value {
        let cards = self.planka.cards();
        assert_eq!(cards.len(), 1, "{cards:?}");
        cards[0].clone()
    }

    async fn webhook(&self, token: Option<&str>, delivery: &Value) -> u16 {
        self.webhook_answer(token, delivery).await.0
    }

    /// The webhook's status and errcode (every answer is Matrix JSON).
    async fn webhook_answer(&self, token: Option<&str>, delivery: &Value) -> (u16, String) {
        let mut request =
            reqwest::Client::new().post(format!("{}/conclave/v1/planka/webhook", self.agent.url)).json(delivery);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, body["errcode"].as_str().unwrap_or_default().to_owned())
    }

    /// The agent's Planka notices in `room`.
    async fn notices(&self, room: &str) -> Vec<String> {
        self.alice
            .timeline(room)
            .await
            .iter()
            .filter(|e| e["sender"] == self.agent.user_id().as_str() && body(e).starts_with("Planka: "))
            .map(|e| body(e).to_owned())
            .collect()
    }
}

#[tokio::test]
async fn binding_is_for_admins_and_unbound_rooms_say_how_to_bind() {
    let w = World::start().await;
    let text = w.ask("!task Fix it").await;
    assert!(text.contains("no Planka board yet") && text.contains("!board bind"), "{text}");
    let text = w.ask("!board").await;
    assert!(text.contains("no Planka board yet"), "{text}");

    // Bob is in access.users but not an admin.
    let bob = User::register("bob").await;
    w.alice.invite(&w.room, &bob.user_id).await;
    bob.join(&w.room).await;
    let id = bob.send_text(&w.room, "!board bind \"Conclave/Dev board\"").await;
    let text = body(&bob.wait_reply(&w.room, &w.agent.user_id(), &id).await).to_owned();
    assert!(text.contains("Only admins"), "{text}");

    let text = w.ask("!board bind \"Conclave/Nope\"").await;
    assert!(text.contains("cannot find the board") && text.contains("Conclave/Dev board"), "{text}");
    let text = w.ask(&format!("!board bind {} Doing", w.board)).await;
    assert!(text.contains("Bound this room") && text.contains("“Doing”"), "{text}");
    let text = w.ask("!board bind \"Conclave/Dev board\" Nowhere").await;
    assert!(text.contains("no list “Nowhere”") && text.contains("“To do”"), "{text}");
    w.bind().await;
    let text = w.ask("!board").await;
    assert!(text.contains("Dev board") && text.contains("“To do”"), "{text}");
    assert!(text.contains(&format!("https://planka.example.org/boards/{}", w.board)), "{text}");
}

#[tokio::test]
async fn every_task_command_works_from_chat() {
    let w = World::start().await;
    w.bind().await;

    // A card from a reply: the replied-to message becomes the description, with a permalink.
    let said = w.alice.send_text(&w.room, "the login page loops forever on Safari").await;
    let (text, created_reply) = w.reply(&said, "!task Fix the login loop").await;
    let card = w.only_card();
    let card_id = card["id"].as_str().unwrap().to_owned();
    assert!(text.contains("`#1`") && text.contains(&format!("https://planka.example.org/cards/{card_id}")), "{text}");
    assert_eq!(card["name"], "Fix the login loop");
    assert_eq!(card["listId"], w.todo.as_str());
    let description = card["description"].as_str().unwrap();
    assert!(description.contains("loops forever on Safari"), "{description}");
    assert!(description.contains(&format!("https://matrix.to/#/{}/{said}", w.room)), "{description}");

    let text = w.ask("/task Write the release notes").await;
    assert!(text.contains("`#2`"), "{text}");
    let text = w.ask("!task list").await;
    assert!(text.contains("`#1` Fix the login loop") && text.contains("`#2` Write the release notes"), "{text}");
    assert!(text.contains("**Doing**") && text.contains("**Done**"), "{text}");
    let text = w.ask("!task list Doing").await;
    assert!(text.contains("(no cards)") && !text.contains("#1"), "{text}");

    let text = w.ask("!task show #1").await;
    assert!(text.contains("Fix the login loop") && text.contains("“To do”"), "{text}");
    let text = w.ask(&format!("!task show https://planka.example.org/cards/{card_id}")).await;
    assert!(text.contains("`#1`"), "{text}");

    let text = w.ask("!task move #1 doing").await;
    assert!(text.contains("Moved `#1`") && text.contains("“Doing”"), "{text}");
    assert_eq!(w.planka.card(&card_id).unwrap()["listId"], w.doing.as_str());

    let text = w.ask("!task comment #1 reproduced on iOS too").await;
    assert!(text.contains("Commented on `#1`"), "{text}");
    let comments = w.planka.comments();
    assert!(
        comments.iter().any(|c| c["cardId"] == card_id.as_str()
            && c["text"].as_str().unwrap().contains("reproduced on iOS too")
            && c["text"].as_str().unwrap().contains(&w.alice.user_id)),
        "{comments:?}"
    );

    let text = w.ask(&format!("!task assign #1 {}", w.alice.user_id)).await;
    assert!(text.contains("Assigned `#1`"), "{text}");
    assert!(w.planka.card_memberships().contains(&(card_id.clone(), w.alice_planka_id.clone())));
    let text = w.ask("!task assign #1 nobody").await;
    assert!(text.contains("“nobody”") && text.contains("conclave-bot"), "{text}");
    // A Matrix user whose Planka username differs is found by the start of their email.
    let carol = w.planka.add_user("cp", "Carol", None, false);
    w.planka.set_email(&carol, "carol@example.org");
    w.planka.add_board_member(&w.board, &carol);
    let text = w.ask("!task assign #1 @carol:test.local").await;
    assert!(text.contains("Assigned `#1`") && text.contains("cp"), "{text}");
    assert!(w.planka.card_memberships().contains(&(card_id.clone(), carol)));

    // Reply-driven: answering the agent's message about the card acts on that card.
    let (text, _) = w.reply(&created_reply, "!task comment from a reply").await;
    assert!(text.contains("Commented on `#1`"), "{text}");
    let (text, _) = w.reply(&created_reply, "!task move To do").await;
    assert!(text.contains("“To do”"), "{text}");
    let (text, _) = w.reply(&created_reply, "!task done").await;
    assert!(text.contains("Done: `#1`") && text.contains("“Done”"), "{text}");
    let card = w.planka.card(&card_id).unwrap();
    assert_eq!(card["listId"], w.done.as_str());
    assert_eq!(card["isClosed"], true);

    // Friendly refusals.
    let text = w.ask("!task show #9").await;
    assert!(text.contains("do not know the card `#9`") && text.contains("`#2`"), "{text}");
    let text = w.ask("!task move #2 Nowhere").await;
    assert!(text.contains("no list “Nowhere”") && text.contains("“Doing”"), "{text}");
    let text = w.ask("!task done").await;
    assert!(text.contains("Which card?"), "{text}");
    let text = w.ask(&format!("!task {}", "x".repeat(300))).await;
    assert!(text.contains("at most 256 characters"), "{text}");
    assert_eq!(w.planka.cards().len(), 2, "refused commands create nothing");
    w.assert_no_secret_shown().await;
}

/// Planka's writes are not idempotent: when Planka made the card (or the comment) and the agent
/// died before it heard back, the replayed command finds what was made instead of making it again
/// (hardening point 4).
#[tokio::test]
async fn a_planka_write_done_before_a_crash_is_not_done_again_on_replay() {
    let mut w = World::start().await;
    w.bind().await;

    let reply = w.crash_after_planka_wrote("/cards", "!task Survive the crash", |p| p.cards().len() == 1).await;
    let card = w.only_card();
    assert_eq!(card["name"], "Survive the crash");
    assert!(reply.contains("`#1`") && reply.contains(card["id"].as_str().unwrap()), "{reply}");

    let reply =
        w.crash_after_planka_wrote("/comments", "!task comment #1 said once", |p| p.comments().len() == 1).await;
    assert!(reply.contains("Commented on `#1`"), "{reply}");
    assert_eq!(w.planka.comments().len(), 1, "{:?}", w.planka.comments());

    // A new command with the same words is a new write, not a replay.
    let text = w.ask("!task Survive the crash").await;
    assert!(text.contains("`#2`"), "{text}");
    assert_eq!(w.planka.cards().len(), 2);
    let text = w.ask("!task comment #1 said once").await;
    assert!(text.contains("Commented on `#1`"), "{text}");
    assert_eq!(w.planka.comments().len(), 2);
}

/// A card of another board is out of this room's reach, even by id.
#[tokio::test]
async fn cards_of_other_boards_are_out_of_reach() {
    let w = World::start().await;
    w.bind().await;
    let project = w.planka.add_project("Other");
    let board = w.planka.add_board(&project, "Secret");
    let list = w.planka.add_list(&board, "Inbox", "active");
    let secret = w.planka.add_card(&list, "Secret plans", 65536.0);
    let text = w.ask(&format!("!task show {secret}")).await;
    assert!(text.contains("not on this room's board") && !text.contains("Secret plans"), "{text}");
}

fn delivery(w: &World, event: &str, actor: &str, card_name: &str, list: &str, prev_list: Option<&str>) -> Value {
    let included = json!({
        "projects": [{"id": "1", "name": "Conclave"}],
        "boards": [{"id": w.board, "name": "Dev board"}],
        "lists": [{"id": w.todo, "name": "To do", "type": "active"}, {"id": w.doing, "name": "Doing", "type": "active"},
                  {"id": w.done, "name": "Done", "type": "closed"}]
    });
    let card = |list: &str| {
        json!({"id": "1913536964640999999", "type": "project", "name": card_name, "listId": list,
               "boardId": w.board, "position": 65536, "isClosed": list == w.done})
    };
    json!({
        "event": event,
        "data": {"item": card(list), "included": included},
        "prevData": prev_list.map(|p| json!({"item": card(p), "included": included})),
        "user": {"id": actor, "name": "Alice", "username": "alice"}
    })
}

#[tokio::test]
async fn planka_webhook_notifies_bound_rooms_once_and_not_the_agents_own_changes() {
    let w = World::start().await;
    w.bind().await;
    let other_room = w.alice.group_room_with(&w.agent.user_id()).await;

    let created = delivery(&w, "cardCreate", &w.alice_planka_id, "Ship it", &w.todo, None);
    assert_eq!(w.webhook(None, &created).await, 401);
    assert_eq!(w.webhook(Some("wrong-token"), &created).await, 403);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &created).await, 200);
    // Too big: the token is checked first, and each refusal is Matrix JSON (issue 18 point 6).
    let huge = json!({"event": "cardCreate", "pad": "x".repeat(300 * 1024)});
    assert_eq!(w.webhook_answer(None, &huge).await, (401, "M_UNAUTHORIZED".into()));
    assert_eq!(w.webhook_answer(Some("wrong-token"), &huge).await, (403, "M_FORBIDDEN".into()));
    assert_eq!(w.webhook_answer(Some(WEBHOOK_TOKEN), &huge).await, (413, "M_TOO_LARGE".into()));
    // Planka may deliver the same body twice: the room still sees it once.
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &created).await, 200);
    let moved = delivery(&w, "cardUpdate", &w.alice_planka_id, "Ship it", &w.done, Some(&w.todo));
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &moved).await, 200);
    // The agent's own change is not echoed back.
    let own = delivery(&w, "cardCreate", &w.agent_planka_id, "Made by the agent", &w.todo, None);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &own).await, 200);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &json!({"event": "listCreate", "data": {"item": {}}})).await, 200);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &json!({"nonsense": true})).await, 400);

    let notices = w.notices(&w.room).await;
    assert_eq!(
        notices,
        [
            "Planka: Alice created “Ship it” in “To do” — https://planka.example.org/cards/1913536964640999999",
            "Planka: Alice moved “Ship it” from “To do” to “Done” and closed it — https://planka.example.org/cards/1913536964640999999",
        ]
    );
    assert!(w.notices(&other_room).await.is_empty(), "an unbound room hears nothing");

    // A card the agent created in chat, reported back by Planka as the agent's change: no echo.
    let text = w.ask("!task From chat").await;
    assert!(text.contains("`#1`"), "{text}");
    let own = delivery(&w, "cardCreate", &w.agent_planka_id, "From chat", &w.todo, None);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &own).await, 200);
    assert_eq!(w.notices(&w.room).await.len(), 2);
    w.assert_no_secret_shown().await;
}

#[tokio::test]
async fn a_room_that_turns_on_encryption_gets_no_plaintext_planka_notices_and_is_told_once() {
    let w = World::start().await;
    w.bind().await;
    let first = delivery(&w, "cardCreate", &w.alice_planka_id, "Before", &w.todo, None);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &first).await, 200);
    w.alice.send_state(&w.room, "m.room.encryption", json!({"algorithm": "m.megolm.v1.aes-sha2"})).await;
    for title in ["After one", "After two"] {
        let later = delivery(&w, "cardCreate", &w.alice_planka_id, title, &w.todo, None);
        assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &later).await, 200);
    }
    let notices = w.notices(&w.room).await;
    assert_eq!(notices.len(), 1, "only the notice from before encryption: {notices:?}");
    assert!(notices[0].contains("Before"), "{notices:?}");
    let told: Vec<String> = w
        .alice
        .timeline(&w.room)
        .await
        .iter()
        .filter(|e| e["sender"] == w.agent.user_id().as_str() && body(e).contains("turned on end-to-end encryption"))
        .map(|e| body(e).to_owned())
        .collect();
    assert_eq!(told.len(), 1, "said once: {told:?}");
    assert!(told[0].contains("!board bind"), "and what to do: {told:?}");
}

#[tokio::test]
async fn after_a_room_upgrade_the_agent_follows_with_the_rooms_board_and_settings() {
    let w = World::start().await;
    w.bind().await;
    assert!(w.ask("!prompt Answer like a pirate.").await.contains("Saved"));
    // A public room: the agent may join the replacement itself when it sees the tombstone.
    w.alice.send_state(&w.room, "m.room.join_rules", json!({"join_rule": "public"})).await;
    let path = format!("/rooms/{}/upgrade", common::client::enc(&w.room));
    let (status, upgraded) = w.alice.request(reqwest::Method::POST, &path, Some(json!({"new_version": "10"}))).await;
    assert_eq!(status, 200, "{upgraded}");
    let new = upgraded["replacement_room"].as_str().unwrap().to_owned();
    w.alice.wait_membership(&new, &w.agent.user_id(), "join").await;

    let board = w.ask_in(&new, "!board").await;
    assert!(board.contains("Dev board"), "the board came along: {board}");
    let prompt = w.ask_in(&new, "!prompt").await;
    assert!(prompt.contains("pirate"), "the room's prompt came along: {prompt}");
    let created = delivery(&w, "cardCreate", &w.alice_planka_id, "In the new room", &w.todo, None);
    assert_eq!(w.webhook(Some(WEBHOOK_TOKEN), &created).await, 200);
    let notices = w.notices(&new).await;
    assert!(notices.len() == 1 && notices[0].contains("In the new room"), "{notices:?}");
    assert!(w.notices(&w.room).await.is_empty(), "the old room no longer hears about the board");
}

#[tokio::test]
async fn planka_down_gets_a_clear_reply_and_the_agent_keeps_serving() {
    let w = World::start().await;
    w.bind().await;
    w.planka.set_down(true);
    let text = w.ask("!task Fix it").await;
    assert!(text.contains("Planka") && text.contains("unavailable"), "{text}");
    assert!(!text.contains("127.0.0.1"), "an internal address in a reply: {text}");
    let text = w.ask("!ping").await;
    assert!(text.starts_with("pong"), "{text}");
    w.planka.set_down(false);
    let text = w.ask("!task Fix it").await;
    assert!(text.contains("`#1`"), "{text}");
}

#[tokio::test]
async fn without_planka_config_commands_say_so_and_the_webhook_is_off() {
    let agent = Agent::start(synapse().slot(), Options::default()).await;
    let alice = User::register("alice").await;
    let room = alice.group_room_with(&agent.user_id()).await;
    let id = alice.send_text(&room, "!task Fix it").await;
    let text = body(&alice.wait_reply(&room, &agent.user_id(), &id).await).to_owned();
    assert!(text.contains("Planka is not configured"), "{text}");
    let status = reqwest::Client::new()
        .post(format!("{}/conclave/v1/planka/webhook", agent.url))
        .bearer_auth("anything")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
}
