//! Coding agents in the rooms, on a real Synapse: tokens, the ghosts, the HTTP API and the CLI the
//! agents run (`post`, `inbox`, `task`, …), the skills, and a real pi driven by a scripted model.

mod common;

use common::agent::{Agent, Options};
use common::chroma::chroma;
use common::client::{User, enc};
use common::embedder::{MODEL as EMBED_MODEL, embedder};
use common::fake_planka::FakePlanka;
use common::postgres::postgres;
use common::scripted_llm::{self, ScriptedLlm, Step};
use common::synapse::{SERVER_NAME, synapse};
use common::wait_for;
use conclave_agent::store::{Store, now_ms};
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Output;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_conclave-agent");
const WAIT: Duration = Duration::from_secs(30);

/// pi may use every room; claude only rooms whose alias starts with `#claude-`; ci is a third
/// agent whose ghost talks in the rooms too.
const AGENTS: &str =
    "[agents.pi]\n[agents.claude]\ndisplay_name = \"Claude Code\"\nrooms = [\"#claude-*:test.local\"]\n[agents.ci]\n";

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0xd, 0xa, 0x1a, 0xa, 0x0, 0x0, 0x0, 0xd, 0x49, 0x48, 0x44, 0x52, 0x0, 0x0, 0x0, 0x1, 0x0,
    0x0, 0x0, 0x1, 0x8, 0x4, 0x0, 0x0, 0x0, 0xb5, 0x1c, 0xc, 0x2, 0x0, 0x0, 0x0, 0xb, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x64, 0x60, 0x0, 0x0, 0x0, 0x6, 0x0, 0x2, 0x30, 0x81, 0xd0, 0x2f, 0x0, 0x0, 0x0, 0x0, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

struct World {
    agent: Agent,
    alice: User,
}

impl World {
    async fn start(extra: &str) -> Self {
        let extra = format!("{AGENTS}{extra}");
        let agent = Agent::start(synapse().slot(), Options { extra, ..Options::default() }).await;
        Self { agent, alice: User::register("alice").await }
    }

    fn ghost(&self, name: &str) -> String {
        self.agent.slot.ghost_id(name)
    }

    /// `conclave-agent token --agent NAME [--rotate]` against the agent's database.
    async fn token_cmd(&self, name: &str, rotate: bool) -> Output {
        let mut args = vec!["--config".to_owned(), self.agent.config_path.display().to_string(), "token".into()];
        args.extend(["--agent".into(), name.into()]);
        if rotate {
            args.push("--rotate".into());
        }
        run(args, Vec::new(), None).await
    }

    /// A fresh token of agent `name`.
    async fn token(&self, name: &str) -> String {
        let out = self.token_cmd(name, false).await;
        assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The coding-agent CLI with `token`, as an agent in the workspace runs it.
    async fn cli(&self, token: &str, args: &[&str]) -> Output {
        self.cli_with(token, args, &[], None).await
    }

    async fn cli_with(&self, token: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut vars = vec![("CONCLAVE_AGENT_URL".to_owned(), self.agent.url.clone())];
        vars.push(("CONCLAVE_AGENT_TOKEN".into(), token.into()));
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        run(args.iter().map(|a| (*a).to_owned()).collect(), vars, stdin.map(str::to_owned)).await
    }

    /// One API request; `(status, body)`.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.agent.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Invites agent `name`'s ghost to `room` and waits until it joined.
    async fn invite_ghost(&self, room: &str, name: &str) {
        let ghost = self.ghost(name);
        let (status, v) = self.alice.invite(room, &ghost).await;
        assert_eq!(status, 200, "{v}");
        self.alice.wait_membership(room, &ghost, "join").await;
    }

    /// A room of alice's (and bob's, so it is no direct chat) with `name`'s ghost in it.
    async fn room_with_ghost(&self, name: &str) -> String {
        let room = self.alice.group_room_with(&self.agent.user_id()).await;
        self.invite_ghost(&room, name).await;
        room
    }

    /// A room of alice's with the alias `#<prefix>-<pid>:server`; `(room id, alias)`.
    async fn aliased_room(&self, prefix: &str) -> (String, String) {
        let name = format!("{prefix}-{}", std::process::id());
        let body = json!({"preset": "private_chat", "room_alias_name": name});
        let (_, v) = self.alice.request(Method::POST, "/createRoom", Some(body)).await;
        (v["room_id"].as_str().unwrap().to_owned(), format!("#{name}:{SERVER_NAME}"))
    }

    /// The event `event_id` of `room`, as alice sees it.
    async fn event(&self, room: &str, event_id: &str) -> Value {
        wait_for(&format!("event {event_id}"), WAIT, || async {
            self.alice.timeline(room).await.into_iter().find(|e| e["event_id"] == event_id)
        })
        .await
    }
}

/// Runs the binary off the runtime's threads; `(args, env, stdin)`.
async fn run(args: Vec<String>, env: Vec<(String, String)>, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(BIN)
            .args(&args)
            .envs(env)
            .env_remove("CONCLAVE_ROOM")
            .env_remove("CONCLAVE_THREAD")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of an `inbox` run.
fn lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "inbox failed: {}", stderr(out));
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// The event id printed by `post`, alone on stdout.
fn posted(out: &Output) -> String {
    assert!(out.status.success(), "post failed ({}): {}", out.status, stderr(out));
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "stdout holds more than the event id: {text:?}");
    let id = text.trim().to_owned();
    assert!(id.starts_with('$'), "{id:?}");
    id
}

/// A message mentioning `user` the way Element does (a pill: display name in the body, the id in
/// `m.mentions`).
fn mention(user: &str, name: &str, text: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("{name}: {text}"), "m.mentions": {"user_ids": [user]}})
}

/// The coding agents' tables keep their contract on both databases.
async fn store_contract(store: Store) {
    use conclave_agent::store::{AgentInboxRow, AgentProgressRow, TokenStored};
    assert_eq!(store.agent_token_store("pi", "id1", "h1", false).await.unwrap(), TokenStored::Stored);
    assert_eq!(store.agent_token_store("pi", "id2", "h2", false).await.unwrap(), TokenStored::Exists);
    assert!(store.agent_token("id2").await.unwrap().is_none());
    assert_eq!(store.agent_token_store("pi", "id3", "h3", true).await.unwrap(), TokenStored::Stored);
    assert!(store.agent_token("id1").await.unwrap().is_none(), "rotation removes the old token");
    assert_eq!(store.agent_token("id3").await.unwrap().unwrap().agent, "pi");

    // The inbox: once per event, in order, bounded with the dropped ones counted.
    let row = |n: i64| AgentInboxRow {
        seq: 0,
        agent: "pi".into(),
        room_id: "!r".into(),
        event_id: format!("${n}"),
        sender: "@alice:x".into(),
        body: format!("m{n}"),
        thread_id: (n % 2 == 0).then(|| "$root".into()),
        reply_to: None,
        ts: n,
    };
    for n in 0..5 {
        assert!(store.agent_inbox_append(&row(n), 3).await.unwrap());
    }
    assert!(!store.agent_inbox_append(&row(4), 3).await.unwrap(), "a replayed event is stored once");
    let kept = store.agent_inbox_after("pi", 0, 100).await.unwrap();
    assert_eq!(kept.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(), ["m2", "m3", "m4"]);
    assert_eq!(kept[0].thread_id.as_deref(), Some("$root"));
    assert_eq!(store.agent_inbox_pruned("pi").await.unwrap(), 2);
    assert_eq!(store.agent_inbox_after("pi", kept[1].seq, 100).await.unwrap().len(), 1);
    assert!(store.agent_inbox_after("claude", 0, 100).await.unwrap().is_empty());

    // Ghost messages, sends, rooms.
    store.agent_message_remember("pi", "!r", "$m").await.unwrap();
    assert_eq!(store.agent_message_owner("!r", "$m").await.unwrap().as_deref(), Some("pi"));
    assert_eq!(store.agent_message_owner("!other", "$m").await.unwrap(), None);
    store.agent_send_remember("pi", "t", "!r", "$a").await.unwrap();
    store.agent_send_remember("pi", "t", "!r", "$b").await.unwrap();
    assert_eq!(store.agent_send("pi", "t").await.unwrap(), Some(("!r".into(), "$a".into())));
    store.agent_room_set("pi", "!r", true).await.unwrap();
    store.agent_room_set("ci", "!r", true).await.unwrap();
    assert_eq!(store.agents_in_room("!r").await.unwrap(), ["ci", "pi"]);
    store.agent_room_set("ci", "!r", false).await.unwrap();
    assert_eq!(store.agent_rooms("pi").await.unwrap(), ["!r"]);
    assert_eq!(store.agents_in_room("!r").await.unwrap(), ["pi"]);

    // Progress: running until final, once; a final edit owed until it is marked shown.
    let p = AgentProgressRow {
        id: "p1".into(),
        agent: "pi".into(),
        room_id: "!r".into(),
        event_id: "$p".into(),
        title: "Build".into(),
        text: String::new(),
        state: "running".into(),
    };
    store.agent_progress_insert(&p).await.unwrap();
    assert!(store.agent_progress_set("p1", "half", "running").await.unwrap());
    assert!(store.agent_progress_set("p1", "all", "done").await.unwrap());
    assert!(!store.agent_progress_set("p1", "more", "running").await.unwrap(), "done is final");
    assert_eq!(store.agent_progress("p1").await.unwrap().unwrap().text, "all");
    assert_eq!(store.agent_progress_owed().await.unwrap().len(), 1);
    store.agent_progress_finished("p1").await.unwrap();
    assert!(store.agent_progress_owed().await.unwrap().is_empty());
    assert!(store.agent_prune_before(now_ms() + 1000).await.unwrap() >= 2);
    assert_eq!(store.agent_message_owner("!r", "$m").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_agent_tables_keep_their_contract() {
    let dir = tempfile::tempdir().unwrap();
    store_contract(Store::connect(&format!("sqlite://{}/a.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_agent_tables_keep_their_contract() {
    store_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

#[tokio::test]
async fn a_token_acts_only_as_its_own_ghost_and_only_in_its_rooms() {
    let w = World::start("").await;
    let (pi, claude) = (w.token("pi").await, w.token("claude").await);
    let room = w.room_with_ghost("pi").await;

    let id = posted(&w.cli(&pi, &["post", "--room", &room, "**tests** green <img src=\"mxc://evil/x\">"]).await);
    let ev = w.event(&room, &id).await;
    assert_eq!(ev["sender"], w.ghost("pi"));
    let html = ev["content"]["formatted_body"].as_str().unwrap();
    assert!(html.contains("<strong>tests</strong>") && !html.contains("<img") && html.contains("&lt;img"), "{html}");

    // The API has no way to name another sender: an extra field is refused, `?user_id=` ignored.
    let body = json!({"room": room, "text": "as @agent", "sender": w.agent.user_id()});
    let (status, v) = w.call(Method::POST, "/conclave/v1/messages", Some(&pi), Some(body)).await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{v}");
    for user in [w.agent.user_id(), w.ghost("claude"), w.alice.user_id.clone()] {
        let path = format!("/conclave/v1/messages?user_id={}", enc(&user));
        let (status, v) =
            w.call(Method::POST, &path, Some(&pi), Some(json!({"room": room, "text": format!("not {user}")}))).await;
        assert_eq!(status, 200, "{v}");
        let ev = w.event(&room, v["event_id"].as_str().unwrap()).await;
        assert_eq!(ev["sender"], w.ghost("pi"), "posted as {user}?");
    }

    // claude may use only `#claude-*` rooms: this one is not.
    let (status, v) =
        w.call(Method::POST, "/conclave/v1/messages", Some(&claude), Some(json!({"room": room, "text": "hi"}))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{v}");
    let out = w.cli(&claude, &["post", "--room", &room, "hi"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("M_FORBIDDEN") && stdout(&out).is_empty(), "{}", stderr(&out));

    // A room pi may use but was never invited to (a private room): refused, saying to invite it.
    let private = w.alice.group_room_with(&w.agent.user_id()).await;
    let (status, v) =
        w.call(Method::POST, "/conclave/v1/messages", Some(&pi), Some(json!({"room": private, "text": "hi"}))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("invite"), "{v}");

    // claude in a room of its own, named by its alias.
    let (croom, alias) = w.aliased_room("claude-dev").await;
    w.invite_ghost(&croom, "claude").await;
    let id = posted(&w.cli(&claude, &["post", "--room", &alias, "hello from claude"]).await);
    assert_eq!(w.event(&croom, &id).await["sender"], w.ghost("claude"));
    // …and pi's token there is still pi.
    w.invite_ghost(&croom, "pi").await;
    let id = posted(&w.cli(&pi, &["post", "--room", &alias, "hello from pi"]).await);
    assert_eq!(w.event(&croom, &id).await["sender"], w.ghost("pi"));
}

#[tokio::test]
async fn tokens_are_printed_once_stored_as_hashes_and_rotation_revokes_at_once() {
    let w = World::start("").await;
    let out = w.token_cmd("pi", false).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let first = stdout(&out);
    assert_eq!(first.lines().count(), 1, "stdout holds the token alone: {first:?}");
    let first = first.trim().to_owned();
    assert!(!stderr(&out).contains(&first), "the token is on stdout only");

    let again = w.token_cmd("pi", false).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(stdout(&again).is_empty() && stderr(&again).contains("--rotate"), "{}", stderr(&again));
    let unknown = w.token_cmd("nobody", false).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("nobody") && stdout(&unknown).is_empty());

    // Only a hash is kept: the secret is nowhere in the database files.
    let secret = first.rsplit('_').next().unwrap();
    for file in ["agent.db", "agent.db-wal"] {
        let bytes = std::fs::read(w.agent.dir.join(file)).unwrap_or_default();
        assert!(!bytes.windows(secret.len()).any(|win| win == secret.as_bytes()), "{file} holds the token");
    }

    let (status, v) = w.call(Method::GET, "/conclave/v1/whoami", Some(&first), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["agent"].as_str(), v["user_id"].as_str()), (Some("pi"), Some(w.ghost("pi").as_str())));

    let rotated = w.token_cmd("pi", true).await;
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let second = stdout(&rotated).trim().to_owned();
    assert_ne!(first, second);
    let (status, v) = w.call(Method::GET, "/conclave/v1/whoami", Some(&first), None).await;
    assert_eq!((status, v["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "the old token still works: {v}");
    assert_eq!(w.call(Method::GET, "/conclave/v1/whoami", Some(&second), None).await.0, 200);

    let (status, v) = w.call(Method::GET, "/conclave/v1/whoami", None, None).await;
    assert_eq!((status, v["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{v}");
    for bad in
        ["nonsense", "cat1_0123456789abcdef_guess", w.agent.slot.as_token.as_str(), w.agent.slot.hs_token.as_str()]
    {
        let (status, v) = w.call(Method::GET, "/conclave/v1/whoami", Some(bad), None).await;
        assert_eq!((status, v["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")), "{bad}: {v}");
    }
}

#[tokio::test]
async fn the_inbox_gets_what_people_address_to_the_ghost_once_and_nothing_from_our_own_users() {
    let w = World::start("").await;
    let pi = w.token("pi").await;
    let state = w.agent.dir.join("pi.cursor");
    let state = state.to_str().unwrap();
    let env = [("CONCLAVE_AGENT_STATE", state)];
    let room = w.room_with_ghost("pi").await;
    w.invite_ghost(&room, "ci").await;

    // A waiting `inbox --wait` answers within a second of the mention.
    let waiting = {
        let (url, pi, state) = (w.agent.url.clone(), pi.clone(), state.to_owned());
        tokio::spawn(async move {
            let env = vec![
                ("CONCLAVE_AGENT_URL".to_owned(), url),
                ("CONCLAVE_AGENT_TOKEN".to_owned(), pi),
                ("CONCLAVE_AGENT_STATE".to_owned(), state),
            ];
            let out = run(["inbox", "--wait", "30"].map(String::from).to_vec(), env, None).await;
            (out, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sent = Instant::now();
    let first = w.alice.send(&room, "m.room.message", mention(&w.ghost("pi"), "pi", "please add a --json flag")).await;
    let (out, answered) = waiting.await.unwrap();
    let got = lines(&out);
    assert!(answered - sent < Duration::from_secs(1), "the long poll answered {:?} after the mention", answered - sent);
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!((m["event_id"].as_str(), m["room"].as_str()), (Some(first.as_str()), Some(room.as_str())));
    assert_eq!(
        (m["sender"].as_str(), m["text"].as_str()),
        (Some(w.alice.user_id.as_str()), Some("pi: please add a --json flag"))
    );
    assert!(m["cursor"].is_string() && m["ts"].is_i64(), "{m}");

    // Not for pi: the agent user's and another ghost's mentions, a bot's notice, chatter.
    let me = User::appservice(&w.agent.slot.as_token, &w.agent.user_id());
    me.send(&room, "m.room.message", mention(&w.ghost("pi"), "pi", "from @agent")).await;
    let ci = User::appservice(&w.agent.slot.as_token, &w.ghost("ci"));
    ci.send(&room, "m.room.message", mention(&w.ghost("pi"), "pi", "from another ghost")).await;
    w.alice
        .send(
            &room,
            "m.room.message",
            json!({"msgtype": "m.notice", "body": "pi: a notice", "m.mentions": {"user_ids": [w.ghost("pi")]}}),
        )
        .await;
    w.alice.send_text(&room, "lunch, anyone?").await;

    // For pi: a reply to its message, a message in its thread, a direct chat.
    let question = posted(&w.cli(&pi, &["post", "--room", &room, "Which format?"]).await);
    let reply = w
        .alice
        .send(&room, "m.room.message", json!({"msgtype": "m.text", "body": "JSON please", "m.relates_to": {"m.in_reply_to": {"event_id": question}}}))
        .await;
    let thread = json!({"rel_type": "m.thread", "event_id": question, "is_falling_back": true, "m.in_reply_to": {"event_id": question}});
    let threaded = w
        .alice
        .send(&room, "m.room.message", json!({"msgtype": "m.text", "body": "and CSV", "m.relates_to": thread}))
        .await;
    let dm = w.alice.create_room(&[&w.ghost("pi")]).await;
    w.alice.wait_membership(&dm, &w.ghost("pi"), "join").await;
    let direct = w.alice.send_text(&dm, "a question just for you").await;

    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(lines(&w.cli_with(&pi, &["inbox", "--wait", "5"], &env, None).await));
    }
    let ids: Vec<&str> = got.iter().map(|m| m["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{got:?}");
    let at = |id: &str| ids.iter().position(|i| *i == id).unwrap_or_else(|| panic!("{id} missing from {got:?}"));
    assert!(at(&reply) < at(&threaded), "in order: {ids:?}");
    assert_eq!(got[at(&reply)]["reply_to"], question.as_str());
    assert_eq!(got[at(&threaded)]["thread"], question.as_str());
    assert_eq!(got[at(&direct)]["room"], dm.as_str());
    // @agent is not in that room: it neither answers there nor tries to.
    let dm_jobs = w.agent.log().lines().filter(|l| l.contains("job started") && l.contains(dm.as_str())).count();
    assert_eq!(dm_jobs, 0, "@agent took up a message of a room it is not in");

    // Nothing shows twice, and nothing else arrived meanwhile.
    assert_eq!(lines(&w.cli_with(&pi, &["inbox"], &env, None).await), Vec::<Value>::new());
    // `--all` lists what is kept, from the oldest, and leaves the cursor alone.
    let all = lines(&w.cli_with(&pi, &["inbox", "--all"], &env, None).await);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(all[0]["event_id"], first.as_str());
    assert_eq!(lines(&w.cli_with(&pi, &["inbox"], &env, None).await), Vec::<Value>::new());
    // The cursor file is the default's shape: the last cursor.
    assert_eq!(std::fs::read_to_string(state).unwrap().trim(), all[3]["cursor"].as_str().unwrap());
}

#[tokio::test]
async fn the_inbox_and_its_cursor_survive_a_restart() {
    let mut w = World::start("").await;
    let pi = w.token("pi").await;
    let home = w.agent.dir.join("home");
    let env = [("HOME", home.to_str().unwrap())];
    let room = w.room_with_ghost("pi").await;

    w.alice.send(&room, "m.room.message", mention(&w.ghost("pi"), "pi", "one")).await;
    let got = lines(&w.cli_with(&pi, &["inbox", "--wait", "10"], &env, None).await);
    assert_eq!(got.len(), 1, "{got:?}");
    // The default cursor file is named after the agent.
    let cursor_file = home.join(".local/state/conclave-agent/pi.cursor");
    assert_eq!(std::fs::read_to_string(&cursor_file).unwrap().trim(), got[0]["cursor"].as_str().unwrap());

    let two = w.alice.send(&room, "m.room.message", mention(&w.ghost("pi"), "pi", "two")).await;
    let after = got[0]["cursor"].as_str().unwrap().to_owned();
    wait_for("the second message in the inbox", WAIT, || async {
        let (_, v) = w.call(Method::GET, &format!("/conclave/v1/inbox?after={after}"), Some(&pi), None).await;
        (!v["messages"].as_array()?.is_empty()).then_some(())
    })
    .await;
    assert!(w.agent.stop().success());
    w.agent.spawn().await;

    let got = lines(&w.cli_with(&pi, &["inbox", "--wait", "10"], &env, None).await);
    assert_eq!(got.iter().map(|m| m["event_id"].as_str().unwrap()).collect::<Vec<_>>(), [two.as_str()]);
    assert_eq!(lines(&w.cli_with(&pi, &["inbox"], &env, None).await), Vec::<Value>::new());
}

#[tokio::test]
async fn progress_is_one_message_edited_at_most_once_a_second_and_the_last_text_lands() {
    let mut w = World::start("").await;
    let (pi, claude) = (w.token("pi").await, w.token("claude").await);
    let room = w.room_with_ghost("pi").await;
    let out = w.cli(&pi, &["progress", "start", "--room", &room, "Adding the --json flag"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(stdout(&out).lines().count(), 1, "{:?}", stdout(&out));

    // 50 updates in 5 s; none waits for the homeserver.
    let started = Instant::now();
    for i in 0..50 {
        let body = json!({"text": format!("step {i} of 50")});
        let sent = Instant::now();
        let (status, v) = w.call(Method::PUT, &format!("/conclave/v1/progress/{id}"), Some(&pi), Some(body)).await;
        assert_eq!((status, v["state"].as_str()), (200, Some("running")), "{v}");
        assert!(sent.elapsed() < Duration::from_millis(500), "an update waited {:?}", sent.elapsed());
        tokio::time::sleep_until((started + Duration::from_millis(100 * (i + 1))).into()).await;
    }
    let out = w.cli(&pi, &["progress", "done", &id, "Added --json; all tests pass"]).await;
    assert!(out.status.success() && stdout(&out).is_empty(), "{}", stderr(&out));
    let elapsed = started.elapsed();

    let timeline = w.alice.timeline(&room).await;
    let mine: Vec<&Value> =
        timeline.iter().filter(|e| e["sender"] == w.ghost("pi").as_str() && e["type"] == "m.room.message").collect();
    let (originals, edits): (Vec<&Value>, Vec<&Value>) =
        mine.iter().partition(|e| e["content"]["m.relates_to"]["rel_type"] != "m.replace");
    assert_eq!(originals.len(), 1, "one message: {originals:?}");
    let message = originals[0]["event_id"].as_str().unwrap();
    assert!(edits.iter().all(|e| e["content"]["m.relates_to"]["event_id"] == message));
    let last = edits.last().unwrap();
    assert_eq!(
        last["content"]["m.new_content"]["body"],
        "✅ **Adding the --json flag**\n\nAdded --json; all tests pass"
    );
    // At most one edit a second, the post counting as the first change.
    let secs = elapsed.as_secs_f64();
    assert!((edits.len() as f64) <= secs + 1.0, "{} edits in {secs:.1} s", edits.len());
    assert!(edits.len() >= 3, "updates were shown while it ran, not only the last: {}", edits.len());
    let times: Vec<i64> = std::iter::once(originals[0])
        .chain(edits.iter().copied())
        .map(|e| e["origin_server_ts"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|t| t[1] - t[0] >= 900), "edits closer than a second: {times:?}");

    // Final: no more updates; another agent cannot even see it.
    let (status, v) =
        w.call(Method::PUT, &format!("/conclave/v1/progress/{id}"), Some(&pi), Some(json!({"text": "more"}))).await;
    assert_eq!((status, v["errcode"].as_str()), (409, Some("M_BAD_STATE")), "{v}");
    let out = w.cli(&pi, &["progress", "update", &id, "more"]).await;
    assert_eq!(out.status.code(), Some(1));
    let (status, v) = w
        .call(Method::PUT, &format!("/conclave/v1/progress/{id}"), Some(&claude), Some(json!({"state": "failed"})))
        .await;
    assert_eq!((status, v["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{v}");

    // A progress message outlives a restart of the agent: the update after it edits the same one.
    let out = w.cli(&pi, &["progress", "start", "--room", &room, "--thread", message, "Second task"]).await;
    let second = stdout(&out).trim().to_owned();
    assert!(w.agent.stop().success());
    w.agent.spawn().await;
    let out = w.cli(&pi, &["progress", "fail", &second, "Blocked on review"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let timeline = w.alice.timeline(&room).await;
    let post = timeline.iter().find(|e| e["content"]["body"] == "⏳ **Second task**").unwrap();
    assert_eq!(post["content"]["m.relates_to"]["rel_type"], "m.thread");
    let post_id = post["event_id"].as_str().unwrap();
    let last = timeline
        .iter()
        .rev()
        .find(|e| {
            e["content"]["m.relates_to"]["event_id"] == post_id
                && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
        })
        .unwrap();
    assert_eq!(last["content"]["m.new_content"]["body"], "❌ **Second task**\n\nBlocked on review");
}

#[tokio::test]
async fn files_show_as_images_with_their_size_or_as_files_and_big_ones_are_refused() {
    let w = World::start("[agent_api]\nmax_upload_bytes = 65536\n").await;
    let pi = w.token("pi").await;
    let room = w.room_with_ghost("pi").await;
    let http = reqwest::Client::new();
    let upload = |name: &str, mime: &str, body: Vec<u8>, thread: Option<&str>| {
        let mut url = format!("{}/conclave/v1/files?room={}&name={}", w.agent.url, enc(&room), enc(name));
        if let Some(t) = thread {
            url.push_str(&format!("&thread={}", enc(t)));
        }
        http.post(url).bearer_auth(&pi).header("content-type", mime).body(body).send()
    };

    let r = upload("dot.png", "image/png", PNG.to_vec(), None).await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    let ev = w.event(&room, &id).await;
    assert_eq!(ev["sender"], w.ghost("pi"));
    let c = &ev["content"];
    assert_eq!((c["msgtype"].as_str(), c["body"].as_str()), (Some("m.image"), Some("dot.png")));
    assert_eq!((c["info"]["w"].as_u64(), c["info"]["h"].as_u64()), (Some(1), Some(1)));
    assert_eq!(
        (c["info"]["size"].as_u64(), c["info"]["mimetype"].as_str()),
        (Some(PNG.len() as u64), Some("image/png"))
    );
    assert!(c["url"].as_str().unwrap().starts_with("mxc://"), "{c}");

    let r = upload("build.log", "text/plain; charset=utf-8", b"all green\n".to_vec(), Some(&id)).await.unwrap();
    assert_eq!(r.status(), 200);
    let ev = w.event(&room, r.json::<Value>().await.unwrap()["event_id"].as_str().unwrap()).await;
    assert_eq!(
        (ev["content"]["msgtype"].as_str(), ev["content"]["info"]["mimetype"].as_str()),
        (Some("m.file"), Some("text/plain"))
    );
    assert_eq!(ev["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(ev["content"]["m.relates_to"]["event_id"], id.as_str());

    let r = upload("big.bin", "application/octet-stream", vec![7; 70_000], None).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_TOO_LARGE");
}

#[tokio::test]
async fn the_same_txn_posts_once() {
    let w = World::start("").await;
    let pi = w.token("pi").await;
    let room = w.room_with_ghost("pi").await;
    let first = posted(&w.cli(&pi, &["post", "--room", &room, "--txn", "deploy-1", "deployed"]).await);
    let again = posted(&w.cli(&pi, &["post", "--room", &room, "--txn", "deploy-1", "deployed"]).await);
    let other_text = posted(&w.cli(&pi, &["post", "--room", &room, "--txn", "deploy-1", "deployed again?"]).await);
    assert_eq!((&first, &first), (&again, &other_text));
    // stdin, without a txn: a new message.
    let piped = posted(&w.cli_with(&pi, &["post", "--room", &room, "-"], &[], Some("line one\nline two\n")).await);
    assert_ne!(piped, first);
    let timeline = w.alice.timeline(&room).await;
    let bodies: Vec<&str> = timeline
        .iter()
        .filter(|e| e["sender"] == w.ghost("pi").as_str())
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["deployed", "line one\nline two"]);
}

/// A fake Planka with the agent's bot user, a project and a "Dev board" (lists "To do" and
/// "Done"), the agent configured for it, pi's token and a room of pi's bound to the board.
struct PlankaWorld {
    w: World,
    planka: FakePlanka,
    project: String,
    bot: String,
    todo: String,
    done: String,
    pi: String,
    room: String,
}

impl PlankaWorld {
    async fn start(planka_extra: &str) -> Self {
        let planka = FakePlanka::start().await;
        let bot = planka.add_user("conclave-bot", "Conclave Agent", None, true);
        let key = planka.add_api_key(&bot);
        let project = planka.add_project("Conclave");
        let board = planka.add_board(&project, "Dev board");
        let todo = planka.add_list(&board, "To do", "active");
        let done = planka.add_list(&board, "Done", "closed");
        planka.add_board_member(&board, &bot);
        let alice = User::register("alice").await;
        let extra = format!(
            "[planka]\nurl = \"{}\"\napi_key = \"{key}\"\n{planka_extra}\n[access]\nadmins = [\"{}\"]\n",
            planka.url, alice.user_id
        );
        let agent =
            Agent::start(synapse().slot(), Options { extra: format!("{AGENTS}{extra}"), ..Options::default() }).await;
        let w = World { agent, alice };
        let pi = w.token("pi").await;
        let room = w.room_with_ghost("pi").await;
        let bind = w.alice.send_text(&room, "!board bind \"Conclave/Dev board\"").await;
        let reply = w.alice.wait_reply(&room, &w.agent.user_id(), &bind).await;
        assert!(reply["content"]["body"].as_str().unwrap().contains("Bound"), "{reply}");
        Self { w, planka, project, bot, todo, done, pi, room }
    }
}

#[tokio::test]
async fn tasks_are_cards_on_the_rooms_board_announced_by_the_ghost() {
    let PlankaWorld { w, planka, project, bot, todo, done, pi, room } = PlankaWorld::start("").await;
    let elsewhere = planka.add_board(&project, "Secret board");
    let secret_list = planka.add_list(&elsewhere, "Backlog", "active");
    planka.add_board_member(&elsewhere, &bot);
    let secret_card = planka.add_card(&secret_list, "Not yours", 65536.0);

    let out =
        w.cli(&pi, &["task", "create", "--room", &room, "Add a --json flag", "--description", "asked in #dev"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let created: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let card_id = created["card_id"].as_str().unwrap().to_owned();
    let card = planka.card(&card_id).unwrap();
    assert_eq!((card["name"].as_str(), card["listId"].as_str()), (Some("Add a --json flag"), Some(todo.as_str())));
    assert_eq!(card["description"], "asked in #dev");
    let announced = w.event(&room, created["event_id"].as_str().unwrap()).await;
    assert_eq!(announced["sender"], w.ghost("pi"));
    assert!(announced["content"]["body"].as_str().unwrap().contains(created["url"].as_str().unwrap()), "{announced}");

    let out = w.cli(&pi, &["task", "comment", &card_id, "working on it"]).await;
    assert!(out.status.success() && stdout(&out).is_empty(), "{}", stderr(&out));
    assert!(planka.comments().iter().any(|c| c["cardId"] == card_id.as_str()
        && c["text"].as_str().unwrap().contains("working on it")
        && c["text"].as_str().unwrap().contains(&w.ghost("pi"))));
    let out = w.cli(&pi, &["task", "move", &card_id, "done"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(planka.card(&card_id).unwrap()["listId"], done.as_str());

    // A card on a board none of pi's rooms is bound to, and a room without a board.
    let out = w.cli(&pi, &["task", "comment", &secret_card, "hello"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("M_FORBIDDEN"), "{}", stderr(&out));
    assert!(!planka.comments().iter().any(|c| c["cardId"] == secret_card.as_str()));
    let unbound = w.room_with_ghost("pi").await;
    let out = w.cli(&pi, &["task", "create", "--room", &unbound, "Nowhere"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Planka board"), "{}", stderr(&out));
}

/// A coding agent's task writes with a `txn` are made once: Planka carries out the first try but
/// its answer never comes (the agent's call times out, the client gives up), and the retry finds
/// the card (or the comment) the first try made instead of making a second; a third try answers
/// the same card again. Without a txn a retry would make a second card.
#[tokio::test]
async fn a_retried_task_write_with_its_txn_makes_no_second_card_or_comment() {
    let PlankaWorld { w, planka, pi, room, .. } = PlankaWorld::start("timeout_secs = 2").await;
    let post = |path: &str, body: Value| {
        let request = reqwest::Client::new().post(format!("{}{path}", w.agent.url)).bearer_auth(&pi).json(&body);
        async move {
            let response = request.timeout(Duration::from_secs(5)).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let task = json!({"room": room, "title": "Retry me", "txn": "card-1"});
    planka.hold_answers(Some((Method::POST, "/cards")));
    let (status, v) = post("/conclave/v1/tasks", task.clone()).await;
    assert_eq!(status, 502, "the first try's Planka call timed out: {v}");
    assert_eq!(planka.cards().iter().filter(|c| c["name"] == "Retry me").count(), 1, "Planka made the card");
    planka.hold_answers(None);
    let (status, first) = post("/conclave/v1/tasks", task.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = post("/conclave/v1/tasks", task).await;
    assert_eq!((status, &again["card_id"], &again["event_id"]), (200, &first["card_id"], &first["event_id"]));
    assert_eq!(planka.cards().iter().filter(|c| c["name"] == "Retry me").count(), 1, "no second card");

    let card = first["card_id"].as_str().unwrap();
    let comment = json!({"text": "halfway there", "txn": "comment-1"});
    let path = format!("/conclave/v1/tasks/{card}/comments");
    planka.hold_answers(Some((Method::POST, "/comments")));
    let (status, v) = post(&path, comment.clone()).await;
    assert_eq!(status, 502, "{v}");
    planka.hold_answers(None);
    for _ in 0..2 {
        let (status, v) = post(&path, comment.clone()).await;
        assert_eq!((status, v["card_id"].as_str()), (200, Some(card)), "{v}");
    }
    let posted = planka.comments().into_iter().filter(|c| c["text"].as_str().unwrap().contains("halfway there"));
    assert_eq!(posted.count(), 1, "no second comment");
}

#[tokio::test]
async fn bad_requests_get_matrix_errors_and_floods_get_429() {
    let w = World::start("[agent_api]\nmax_body_bytes = 4096\nrequests_per_second = 1\nburst = 5\n").await;
    let pi = w.token("pi").await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", w.agent.url);
    let token = &pi;
    let send = |r: reqwest::RequestBuilder| async move {
        let r = r.bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("not json", http.post(url("/conclave/v1/messages")).body("{oops"), 400, "M_NOT_JSON"),
        ("wrong shape", http.post(url("/conclave/v1/messages")).json(&json!({"room": 5})), 400, "M_BAD_JSON"),
        ("huge", http.post(url("/conclave/v1/messages")).body(vec![b' '; 5000]), 413, "M_TOO_LARGE"),
        ("wrong method", http.get(url("/conclave/v1/messages")), 405, "M_UNRECOGNIZED"),
    ];
    for (name, request, status, errcode) in cases {
        let (s, v) = send(request).await;
        assert_eq!((s, v["errcode"].as_str()), (status, Some(errcode)), "{name}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{name}: {v}");
    }
    // Beyond the burst of 5 (a wrong method is no request of the API's), a 429 says how long to wait.
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(send(http.get(url("/conclave/v1/kb/search?q=x"))).await);
    }
    let (s, v) = answers.pop().unwrap();
    assert_eq!((s, v["errcode"].as_str()), (429, Some("M_LIMIT_EXCEEDED")), "{v}");
    assert!(answers.iter().all(|(s, _)| *s == 404 || *s == 429), "{answers:?}");
    let wait = v["retry_after_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&wait), "{v}");
    // The CLI waits and tries again (up to 3 times), so a 429 alone does not fail it.
    let out = w.cli(&pi, &["kb", "search", "tmux"]).await;
    assert_eq!(out.status.code(), Some(1), "the kb answers 404 until it exists");
    assert!(stderr(&out).contains("404 M_NOT_FOUND") && stderr(&out).contains("knowledge base"), "{}", stderr(&out));
    // Unknown paths are JSON too (no token needed to be told).
    let r = http.get(url("/conclave/v1/nothing-here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn only_configured_ghosts_exist_and_they_join_only_where_they_may() {
    let w = World::start(&format!("[access]\nusers = [\"@alice*:{SERVER_NAME}\"]\n")).await;
    // The homeserver asks about a user of the namespace: only configured agents' ghosts exist.
    let ask = |user: String| {
        let r = w.agent.as_homeserver(Method::GET, &format!("/_matrix/app/v1/users/{}", enc(&user)));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ask(w.ghost("pi")).await, 200);
    assert_eq!(ask(w.ghost("nobody")).await, 404);
    let room = w.alice.create_room(&[]).await;
    // Synapse lets anyone invite a user that does not exist; the invite creates no account.
    w.alice.invite(&room, &w.ghost("nobody")).await;

    // claude may not be in a room without a #claude-* alias: its invite is rejected.
    let (status, v) = w.alice.invite(&room, &w.ghost("claude")).await;
    assert_eq!(status, 200, "{v}");
    w.alice.wait_membership(&room, &w.ghost("claude"), "leave").await;
    // An invite from someone not in access.users is rejected too.
    let mallory = User::register("mallory").await;
    let theirs = mallory.create_room(&[&w.ghost("pi")]).await;
    mallory.wait_membership(&theirs, &w.ghost("pi"), "leave").await;
    // From alice, into a room its globs allow: joined, and named as configured.
    w.invite_ghost(&room, "pi").await;
    let (croom, _) = w.aliased_room("claude-ok").await;
    w.invite_ghost(&croom, "claude").await;
    let (_, profile) = w.alice.request(Method::GET, &format!("/profile/{}", enc(&w.ghost("claude"))), None).await;
    assert_eq!(profile["displayname"], "Claude Code");
    // By now the invite of the unconfigured ghost was handled (events of a room in order… and
    // later rooms after it): it did not make the user exist.
    let (status, v) = w.alice.request(Method::GET, &format!("/profile/{}", enc(&w.ghost("nobody"))), None).await;
    assert_eq!(status, 404, "{v}");
    assert_ne!(w.alice.membership(&room, &w.ghost("nobody")).await.as_deref(), Some("join"));
}

#[tokio::test]
async fn search_covers_only_rooms_the_ghost_is_in() {
    let c = chroma().config("agents");
    let extra = format!(
        "[llm]\nembedding_base_url = \"{}\"\nembedding_model = \"{EMBED_MODEL}\"\n[chroma]\nurl = \"{}\"\ncollection = \"{}\"\n",
        embedder().base_url,
        c.url,
        c.collection
    );
    let w = World::start(&extra).await;
    let pi = w.token("pi").await;
    let with_pi = w.room_with_ghost("pi").await;
    let without = w.alice.group_room_with(&w.agent.user_id()).await;
    let seen = w.alice.send_text(&with_pi, "The deploy key rotates every Tuesday at noon.").await;
    let hidden = w.alice.send_text(&without, "The deploy key for the secret project is on the blue USB stick.").await;
    let store = conclave_agent::rag::ChromaClient::new(&c, Duration::from_secs(10)).unwrap();
    wait_for("both messages indexed", Duration::from_secs(60), || async {
        (store.get(&[seen.as_str(), hidden.as_str()]).await.ok()?.len() == 2).then_some(())
    })
    .await;

    let search = |room: Option<&str>| {
        let mut args = vec!["search".to_owned()];
        if let Some(room) = room {
            args.extend(["--room".to_owned(), room.to_owned()]);
        }
        args.push("when does the deploy key rotate".into());
        let (w, pi) = (&w, &pi);
        async move { w.cli(pi, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let found = lines(&search(Some(&with_pi)).await);
    assert_eq!(found.first().map(|r| r["event_id"].clone()), Some(json!(seen)), "{found:?}");
    assert!(found[0]["permalink"].as_str().unwrap().contains("?via="), "{found:?}");
    // Without a room: every room pi is in, and only those.
    let found = lines(&search(None).await);
    assert!(!found.is_empty() && found.iter().all(|r| r["room"] == with_pi.as_str()), "{found:?}");
    let out = search(Some(&without)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("M_FORBIDDEN") && stdout(&out).is_empty(), "{}", stderr(&out));
}

#[tokio::test]
async fn the_skills_parse_and_every_command_they_show_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("skills");
    for tool in ["pi", "claude-code"] {
        let path = root.join(tool).join("conclave/SKILL.md");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Frontmatter: `name` = the folder's name (lowercase, hyphens), a description of ≤ 1024 chars.
        let front = text.strip_prefix("---\n").and_then(|t| t.split_once("\n---\n")).map(|(f, _)| f);
        let front = front.unwrap_or_else(|| panic!("{}: no frontmatter", path.display()));
        let field = |key: &str| {
            front
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(field("name"), "conclave", "{tool}");
        let description = field("description");
        assert!(description.len() > 40 && description.len() <= 1024, "{tool}: {description:?}");

        // Every command in a code block: its subcommands exist, and so do its flags.
        let mut shown = 0;
        let mut in_block = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_block = !in_block;
                continue;
            }
            for part in line.split('|').map(str::trim) {
                let part = part.split("$(").last().unwrap_or(part);
                let Some(rest) = part.strip_prefix("conclave-agent ").filter(|_| in_block) else { continue };
                shown += 1;
                check_command(tool, rest).await;
            }
        }
        assert!(shown >= 10, "{tool}: only {shown} commands shown");
    }
}

/// `post --room R text` exists in `--help`: each word before the first argument is a
/// subcommand, and every `--flag` is one of that subcommand's.
async fn check_command(tool: &str, command: &str) {
    let words = shell_words(command);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut path: Vec<String> = Vec::new();
    loop {
        let help = run(path.iter().cloned().chain(["--help".into()]).collect(), Vec::new(), None).await;
        assert!(help.status.success(), "{tool}: `conclave-agent {}` does not exist", path.join(" "));
        let help = stdout(&help);
        let subcommands: Vec<&str> = help
            .split("Commands:")
            .nth(1)
            .map(|s| s.split("\n\n").next().unwrap_or_default())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        match words.get(path.len()) {
            Some(word) if subcommands.contains(word) => path.push((*word).to_owned()),
            _ => {
                assert!(!path.is_empty(), "{tool}: {command:?} names no command");
                for flag in words.iter().filter(|w| w.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        help.contains(flag),
                        "{tool}: `conclave-agent {}` has no {flag} ({command:?})",
                        path.join(" ")
                    );
                }
                return;
            }
        }
    }
}

/// Splits a shell command line into words: quotes group, and end, a word; a quoted word is one
/// argument even when it holds spaces or dashes.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut quoted) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => (quote, quoted) = (Some(c), true),
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() || quoted {
                    // A quoted word never counts as a flag: mark it.
                    words.push(if quoted { format!("\u{0}{word}") } else { std::mem::take(&mut word) });
                }
                (word, quoted) = (String::new(), false);
            }
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() || quoted {
        words.push(if quoted { format!("\u{0}{word}") } else { word });
    }
    words
}

/// The pi the setup script installs, if it is there.
fn pi_bin() -> std::path::PathBuf {
    let bin = std::env::var_os("CONCLAVE_PI")
        .map(Into::into)
        .unwrap_or_else(|| common::tools_dir().join("pi/node_modules/.bin/pi"));
    assert!(bin.exists(), "no pi at {}: run scripts/setup.sh first", bin.display());
    bin
}

#[tokio::test]
async fn a_real_pi_with_the_skill_posts_as_its_ghost() {
    let w = World::start("").await;
    let token = w.token("pi").await;
    let room = w.room_with_ghost("pi").await;

    // pi's home: the scripted model as its only provider, and the Conclave skill installed.
    let home = w.agent.dir.join("pi-agent");
    let skill_dir = home.join("skills/conclave");
    std::fs::create_dir_all(&skill_dir).unwrap();
    let skill = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("skills/pi/conclave/SKILL.md");
    std::fs::copy(skill, skill_dir.join("SKILL.md")).unwrap();
    let text = "Added the --json flag; tests pass.";
    let llm = ScriptedLlm::start(vec![
        Step::Tool { name: "bash".into(), arguments: json!({"command": format!("conclave-agent post \"{text}\"")}) },
        Step::Text("I posted the status to the room.".into()),
    ])
    .await;
    let models = json!({"providers": {"fake": {"baseUrl": llm.url, "api": "openai-completions", "apiKey": "none",
        "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
        "models": [{"id": scripted_llm::MODEL}]}}});
    std::fs::write(home.join("models.json"), models.to_string()).unwrap();
    let workdir = w.agent.dir.join("project");
    std::fs::create_dir_all(&workdir).unwrap();

    let bin_dir = std::path::Path::new(BIN).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    let (pi, url, room2) = (pi_bin(), w.agent.url.clone(), room.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(pi)
            .args(["-p", "--provider", "fake", "--model", scripted_llm::MODEL, "--no-session", "--offline"])
            .arg("Add a --json flag to the exporter, then tell the room.")
            .current_dir(&workdir)
            .env("PI_CODING_AGENT_DIR", &home)
            .env("PATH", path)
            .env("CONCLAVE_AGENT_URL", url)
            .env("CONCLAVE_AGENT_TOKEN", token)
            .env("CONCLAVE_ROOM", room2)
            .env_remove("CONCLAVE_THREAD")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "pi failed: {}\n{}", stdout(&out), stderr(&out));

    let ev = wait_for("pi's message in the room", WAIT, || async {
        w.alice.timeline(&room).await.into_iter().find(|e| e["content"]["body"] == text)
    })
    .await;
    assert_eq!(ev["sender"], w.ghost("pi"));
    // pi saw the skill (its system prompt lists it) and ran the command through its bash tool.
    let requests = llm.requests();
    assert!(requests.len() >= 2, "{requests:?}");
    let system = requests[0]["messages"].as_array().unwrap().iter().find(|m| m["role"] == "system").unwrap();
    assert!(system["content"].as_str().unwrap().contains("conclave"), "the skill is not in pi's prompt");
    let tool_result = requests[1]["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_result["content"].to_string().contains('$'), "the tool result shows the event id: {tool_result}");
}

/// Whether `value` fits `schema` of the OpenAPI document `doc` as far as the document says:
/// types, required properties, enums, and the properties and items inside. `Err` says where not.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").ok_or(format!("{at}: unknown $ref {r}"))?;
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !fits {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(choices) = schema["enum"].as_array()
        && !choices.contains(value)
    {
        return Err(format!("{at}: {value} is none of {choices:?}"));
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let key = required.as_str().unwrap();
        if value.get(key).is_none() {
            return Err(format!("{at}: no {key} in {value}"));
        }
    }
    if let (Some(properties), Some(object)) = (schema["properties"].as_object(), value.as_object()) {
        for (key, property) in properties {
            if let Some(v) = object.get(key) {
                conforms(doc, property, v, &format!("{at}.{key}"))?;
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_openapi_document_matches_the_running_server() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/agent-api.openapi.json")).unwrap(),
    )
    .unwrap();
    let w = World::start("").await;
    let pi = w.token("pi").await;
    let room = w.room_with_ghost("pi").await;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, op) in operations.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let example = &op["x-example"];
            let fill = |text: &str| text.replace("{room}", &room);
            let mut url = path.clone();
            for (name, value) in example["path"].as_object().into_iter().flatten() {
                url = url.replace(&format!("{{{name}}}"), value.as_str().unwrap());
            }
            let query: Vec<(String, String)> = example["query"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), fill(v.as_str().unwrap())))
                .collect();
            let request = |token: Option<&str>| {
                let mut r = http.request(method.clone(), format!("{}{url}", w.agent.url)).query(&query);
                if let Some(token) = token {
                    r = r.bearer_auth(token);
                }
                if let Some(body) = example.get("body") {
                    r = r.json(&serde_json::from_str::<Value>(&fill(&body.to_string())).unwrap());
                } else if let Some(raw) = example["raw"].as_str() {
                    r = r.header("content-type", "text/plain").body(raw.to_owned());
                }
                r
            };
            let what = format!("{method} {path}");
            // Without a token: the documented 401.
            let r = request(None).send().await.unwrap();
            assert_eq!(r.status(), 401, "{what} without a token");
            let body: Value = r.json().await.unwrap();
            conforms(&doc, &op["responses"]["401"]["content"]["application/json"]["schema"], &body, &what).unwrap();
            // With one: a documented status, and a body of its schema.
            let r = request(Some(&pi)).send().await.unwrap();
            let status = r.status().as_u16().to_string();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let response = &op["responses"][&status];
            assert!(response.is_object(), "{what} answered {status}, which the document does not list: {body}");
            conforms(&doc, &response["content"]["application/json"]["schema"], &body, &what)
                .unwrap_or_else(|e| panic!("{what} → {status}: {e}"));
            // A method the document does not list on this path is a 405.
            for other in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                if operations.get(other.as_str().to_lowercase()).is_none() {
                    let r = http
                        .request(other.clone(), format!("{}{url}", w.agent.url))
                        .bearer_auth(&pi)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 405, "{other} {path} is not documented, so not served");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11, "every operation was sent");
}
