//! The store's contract, run against both databases: SQLite (embedded default) and a real
//! PostgreSQL server.

mod common;

use common::postgres::postgres;
use conclave_agent::store::{BackfillPage, HistoryMessage, IndexOp, IndexWrite, NewEvent, RoomNotice, Store, now_ms};

fn ev(room: &str, id: &str, json: &str) -> NewEvent {
    NewEvent { room_id: room.into(), event_id: id.into(), json: json.into() }
}

/// Claims every waiting event outside `skip`, as the dispatcher would.
async fn claim_all(store: &Store, skip: &[&str]) -> Vec<conclave_agent::store::InboxItem> {
    let seqs: Vec<i64> = store.inbox_candidates(skip, 10_000).await.unwrap().into_iter().map(|(s, _)| s).collect();
    store.inbox_claim(&seqs).await.unwrap()
}

/// The seqs the dispatcher may claim now (without claiming them).
async fn candidates(store: &Store, skip: &[&str]) -> Vec<i64> {
    store.inbox_candidates(skip, 10_000).await.unwrap().into_iter().map(|(s, _)| s).collect()
}

async fn contract(store: Store) {
    // A transaction is stored whole; its retry has no second effect.
    let events = vec![ev("!a", "$1", r#"{"n":1}"#), ev("!a", "$2", r#"{"n":2}"#), ev("!b", "$3", r#"{"n":3}"#)];
    assert!(store.ingest("t1", events.clone()).await.unwrap());
    assert!(!store.ingest("t1", events).await.unwrap(), "a retried txn must be recognised");
    assert_eq!(store.inbox_len().await.unwrap(), 3);
    // The same txn id with other events (the homeserver counting from 1 again after a restart) is
    // a new delivery, stored like any other (invariant 1): its events must not be lost.
    assert!(store.ingest("t1", vec![ev("!c", "$9", "{}")]).await.unwrap(), "a reused txn id is not a retry");
    assert!(!store.ingest("t1", vec![ev("!c", "$9", "{}")]).await.unwrap(), "and its own retry is one");
    assert_eq!(store.inbox_len().await.unwrap(), 4);
    let reused = claim_all(&store, &["!a", "!b"]).await;
    assert_eq!(reused.iter().map(|i| i.event_id.as_str()).collect::<Vec<_>>(), ["$9"]);
    store.inbox_done(&[reused[0].seq], &[]).await.unwrap();

    // Oldest first, JSON kept byte for byte; claiming counts nothing (a try is counted when it runs).
    let items = claim_all(&store, &[]).await;
    let ids: Vec<&str> = items.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, ["$1", "$2", "$3"]);
    assert_eq!(items[1].event, r#"{"n":2}"#);
    assert!(items.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(items.iter().all(|i| i.attempts == 0));
    assert_eq!(store.inbox_attempt(items[0].seq).await.unwrap(), 1);
    // Rooms being handled are left out.
    assert_eq!(candidates(&store, &["!a"]).await, [items[2].seq]);

    // A head backing off holds back its whole room, not the others.
    store.inbox_retry_at(items[0].seq, now_ms() + 60_000, false).await.unwrap();
    assert_eq!(candidates(&store, &[]).await, [items[2].seq]);
    assert_eq!(store.inbox_claim(&[items[0].seq]).await.unwrap()[0].attempts, 1, "counted once, before it ran");

    // A failed try not counted before it started is counted when it fails; done events leave.
    store.inbox_retry_at(items[2].seq, 0, true).await.unwrap();
    assert_eq!(store.inbox_claim(&[items[2].seq]).await.unwrap()[0].attempts, 1);
    store.inbox_done(&[items[2].seq], &[]).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 2);

    // A dead letter leaves the inbox, is kept aside, and frees its room.
    store.inbox_dead_letter(items[0].seq, "boom").await.unwrap();
    assert_eq!(store.dead_letter_count().await.unwrap(), 1);
    assert_eq!(candidates(&store, &[]).await, [items[1].seq]);
    store.inbox_done(&[items[1].seq], &[]).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);

    // Large transactions span several INSERT statements and keep their order.
    let bodies: Vec<String> = (0..450).map(|i| format!("{{\"i\":{i}}}")).collect();
    let ids: Vec<String> = (0..450).map(|i| format!("$big{i}")).collect();
    let big: Vec<NewEvent> = (0..450).map(|i| ev("!c", &ids[i], &bodies[i])).collect();
    assert!(store.ingest("t2", big).await.unwrap());
    let got = claim_all(&store, &[]).await;
    assert_eq!(got.len(), 450);
    assert!(got.iter().enumerate().all(|(i, item)| item.event_id == ids[i]));
    let seqs: Vec<i64> = got.iter().map(|i| i.seq).collect();
    // Handled events leave the inbox in the same transaction that queues their index changes.
    let writes =
        [IndexWrite::upsert("$big0", "!c", "@u:s", 1, None, "hello").into(), IndexWrite::delete("$big1", "!c").into()];
    store.inbox_done(&seqs, &writes).await.unwrap();
    assert_eq!(store.index_backlog(Some("!c")).await.unwrap(), 2);
    let queued = store.index_due(10).await.unwrap();
    store.index_done(&queued).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);

    // Room state.
    assert!(!store.room_is_joined("!a").await.unwrap());
    store.room_set_joined("!a", true).await.unwrap();
    store.room_set_joined("!b", true).await.unwrap();
    store.room_set_joined("!b", false).await.unwrap();
    assert!(store.room_is_joined("!a").await.unwrap());
    assert_eq!(store.joined_rooms().await.unwrap(), ["!a"]);
    assert!(!store.room_notice_sent("!a", RoomNotice::CannotRead).await.unwrap());
    store.mark_room_notice_sent("!a", RoomNotice::CannotRead).await.unwrap();
    assert!(store.room_notice_sent("!a", RoomNotice::CannotRead).await.unwrap());
    assert!(!store.room_notice_sent("!a", RoomNotice::NoPlankaNotices).await.unwrap(), "each notice on its own");
    store.mark_room_notice_sent("!a", RoomNotice::NoPlankaNotices).await.unwrap();
    assert!(store.room_notice_sent("!a", RoomNotice::NoPlankaNotices).await.unwrap());
    assert!(store.room_is_joined("!a").await.unwrap(), "the notice flag keeps membership");
    // Leaving keeps what the room set up (its notice flag, settings) and says when it happened.
    store.room_left("!a", now_ms()).await.unwrap();
    assert!(store.room_notice_sent("!a", RoomNotice::CannotRead).await.unwrap());
    assert!(store.joined_rooms().await.unwrap().is_empty());
    assert!(store.room_left_at("!a").await.unwrap().is_some_and(|t| t <= now_ms()));
    store.room_set_joined("!a", true).await.unwrap();
    assert_eq!(store.room_left_at("!a").await.unwrap(), None, "back: left_at cleared");
    store.room_left("!a", now_ms()).await.unwrap();

    // Room settings survive next to membership, and reset.
    use conclave_agent::store::{RoomSettings, today};
    assert_eq!(store.room_settings("!s").await.unwrap(), RoomSettings::default());
    let set = RoomSettings { model: Some("qwen3:8b".into()), prompt: Some("Be terse.".into()), indexing: Some(false) };
    store.set_room_settings("!s", &set).await.unwrap();
    store.room_set_joined("!s", true).await.unwrap();
    assert_eq!(store.room_settings("!s").await.unwrap(), set);
    store.set_room_settings("!s", &RoomSettings::default()).await.unwrap();
    assert_eq!(store.room_settings("!s").await.unwrap(), RoomSettings::default());

    // The usage ledger adds up per room and per user.
    store.record_usage("!s", "@a:x", "m1", 100, 10).await.unwrap();
    store.record_usage("!s", "@a:x", "m1", 50, 5).await.unwrap();
    store.record_usage("!s", "@b:x", "m2", 7, 3).await.unwrap();
    store.record_usage("!t", "@a:x", "m1", 1, 1).await.unwrap();
    let room = store.room_usage("!s", today()).await.unwrap();
    assert_eq!((room.requests, room.prompt_tokens, room.completion_tokens), (3, 157, 18));
    let user = store.user_usage("@a:x", today() - 29).await.unwrap();
    assert_eq!((user.requests, user.prompt_tokens, user.completion_tokens), (3, 151, 16));
    assert_eq!(store.user_usage("@a:x", today() + 1).await.unwrap().requests, 0);

    // Old txn ids are pruned; recent ones are kept.
    assert_eq!(store.prune_seen_txns(now_ms() - 60_000).await.unwrap(), 0);
    assert_eq!(store.prune_seen_txns(now_ms() + 1).await.unwrap(), 3);
    store.close().await;
}

/// Concurrent ingests (written as group commits) each get the right answer, including the same
/// delivery (txn id and events) racing with itself.
async fn concurrent_ingest(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        // Every delivery twice: exactly one of each pair is new.
        let (txn, pair) = (format!("c{}", i / 2), i / 2);
        tasks.push(tokio::spawn(async move {
            let events = (0..10).map(|j| ev(&format!("!r{}", pair % 3), &format!("${pair}-{j}"), "{}")).collect();
            store.ingest(&txn, events).await.unwrap()
        }));
    }
    let mut new = 0;
    for t in tasks {
        new += usize::from(t.await.unwrap());
    }
    assert_eq!(new, 20);
    assert_eq!(store.inbox_len().await.unwrap(), 200);
    store.close().await;
}

#[tokio::test]
async fn sqlite_concurrent_ingest() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_ingest(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_concurrent_ingest() {
    concurrent_ingest(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

/// The ingest writer has its own SQLite connection beside the pool's. A pool transaction that
/// reads before it writes (storing a token reads the old one first) must wait for the ingest
/// writer's commits, never fail: begun DEFERRED, its read snapshot goes stale when ingest commits
/// in between and SQLite refuses the write at once ("database is locked").
#[tokio::test]
async fn sqlite_transactions_that_read_first_do_not_fail_beside_a_busy_ingest_writer() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROTATIONS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap();
    // The writer is kept busy until every rotation is done, so each one runs beside it however
    // fast or slow the machine is (a fixed amount of ingest finished first on a slow CI).
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut txns: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut calls = tokio::task::JoinSet::new();
                for _ in 0..64 {
                    let (store, i) = (store.clone(), txns);
                    txns += 1;
                    calls.spawn(async move {
                        let events = (0..20).map(|j| ev("!busy", &format!("${i}-{j}"), "{\"body\":\"x\"}")).collect();
                        store.ingest(&format!("busy{i}"), events).await.unwrap()
                    });
                }
                while let Some(new) = calls.join_next().await {
                    assert!(new.unwrap());
                }
            }
            txns
        })
    };
    while store.inbox_len().await.unwrap() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for rotation in 0..ROTATIONS {
        store.agent_token_store("coder", &format!("id{rotation}"), "hash", true).await.unwrap_or_else(|e| {
            panic!("rotation {rotation} failed beside the ingest writer: {e}");
        });
        assert!(!ingest.is_finished(), "the writer stopped before rotation {rotation}");
    }
    stop.store(true, Ordering::Relaxed);
    let txns = ingest.await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), txns * 20);
}

#[tokio::test]
async fn sqlite_store_keeps_its_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(Store::connect(&format!("sqlite://{}/a/b/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_store_keeps_its_contract() {
    contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

/// What was acknowledged survives closing and reopening (migrations run again harmlessly).
async fn survives_reopen(url: &str) {
    let store = Store::connect(url).await.unwrap();
    assert!(store.ingest("t1", vec![ev("!a", "$1", "{}")]).await.unwrap());
    store.close().await;
    let store = Store::connect(url).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 1);
    assert!(!store.ingest("t1", vec![ev("!a", "$1", "{}")]).await.unwrap());
    store.close().await;
}

#[tokio::test]
async fn sqlite_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    survives_reopen(&format!("sqlite://{}/agent.db", dir.path().display())).await;
}

#[tokio::test]
async fn postgres_state_survives_reopen() {
    survives_reopen(&postgres().fresh_database().await).await;
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    let port = common::free_port();
    let err = Store::connect(&format!("postgres://postgres@127.0.0.1:{port}/x")).await.unwrap_err();
    assert!(err.to_string().contains("database error"), "{err}");
}

/// Room ↔ board bindings and the card memory, on either database.
async fn tasks_contract(store: Store) {
    assert_eq!(store.board_binding("!a").await.unwrap(), None);
    store.room_set_joined("!a", true).await.unwrap();
    store.room_set_joined("!b", true).await.unwrap();
    store.bind_board("!a", "b1", "l1", "@admin:x").await.unwrap();
    store.bind_board("!b", "b1", "l9", "@admin:x").await.unwrap();
    store.bind_board("!a", "b1", "l2", "@admin:x").await.unwrap();
    let binding = store.board_binding("!a").await.unwrap().unwrap();
    assert_eq!((binding.board_id.as_str(), binding.list_id.as_str()), ("b1", "l2"), "rebinding replaces");
    assert_eq!(store.rooms_bound_to("b1").await.unwrap(), ["!a", "!b"]);
    assert!(store.rooms_bound_to("b2").await.unwrap().is_empty());

    // References count per room, and a card keeps its reference.
    assert_eq!(store.remember_card("!a", "c1", Some("$t1")).await.unwrap(), 1);
    assert_eq!(store.remember_card("!a", "c2", None).await.unwrap(), 2);
    assert_eq!(store.remember_card("!a", "c1", Some("$t1")).await.unwrap(), 1, "idempotent");
    assert_eq!(store.remember_card("!b", "c2", None).await.unwrap(), 1, "per room");
    let c1 = store.card_by_ref("!a", 1).await.unwrap().unwrap();
    assert_eq!((c1.card_id.as_str(), c1.trigger_event_id.as_deref()), ("c1", Some("$t1")));
    assert!(c1.created_at > 0);
    assert_eq!(store.card_by_ref("!a", 3).await.unwrap(), None);
    assert_eq!(store.card_by_id("!b", "c1").await.unwrap(), None, "nothing leaks across rooms");
    let recent: Vec<i64> = store.recent_cards("!a", 10).await.unwrap().iter().map(|c| c.ref_no).collect();
    assert_eq!(recent, [2, 1]);

    // The first message about a created card is its reply; every message finds its card.
    store.remember_card_message("!a", "$r1", "c1").await.unwrap();
    store.remember_card_message("!a", "$r2", "c1").await.unwrap();
    store.remember_card_message("!a", "$r2", "c1").await.unwrap();
    assert_eq!(store.card_by_ref("!a", 1).await.unwrap().unwrap().reply_event_id.as_deref(), Some("$r1"));
    assert_eq!(store.card_of_message("!a", "$r2").await.unwrap().as_deref(), Some("c1"));
    assert_eq!(store.card_of_message("!b", "$r2").await.unwrap(), None);

    // A Planka write's intent: the first try is not "earlier"; a replay is, and sees the result.
    use conclave_agent::store::PlankaIntent;
    let first = PlankaIntent { earlier: false, result: None };
    assert_eq!(store.planka_intent("!a", "$w1").await.unwrap(), first);
    assert_eq!(store.planka_intent("!a", "$w1").await.unwrap(), PlankaIntent { earlier: true, result: None });
    assert_eq!(store.planka_intent("!b", "$w1").await.unwrap(), first, "per room");
    assert!(!store.planka_result_claimed("k1").await.unwrap());
    store.planka_intent_done("!a", "$w1", "k1").await.unwrap();
    let done = PlankaIntent { earlier: true, result: Some("k1".into()) };
    assert_eq!(store.planka_intent("!a", "$w1").await.unwrap(), done);
    assert!(store.planka_result_claimed("k1").await.unwrap());
    assert!(store.card_known("c2").await.unwrap() && !store.card_known("c9").await.unwrap());

    // Leaving a room keeps its binding for a return, but its board's changes reach only rooms the
    // agent is in.
    assert_eq!(store.rooms_bound_to("b1").await.unwrap(), ["!a", "!b"]);
    store.room_left("!a", now_ms()).await.unwrap();
    assert!(store.board_binding("!a").await.unwrap().is_some());
    assert_eq!(store.rooms_bound_to("b1").await.unwrap(), ["!b"]);
    store.close().await;
}

#[tokio::test]
async fn sqlite_tasks_contract() {
    let dir = tempfile::tempdir().unwrap();
    tasks_contract(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_tasks_contract() {
    tasks_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

/// The indexing queue: one job per event, edits replace pending text, redactions win, a job
/// replaced while the indexer worked on it stays, failed jobs back off.
async fn index_queue_contract(store: Store) {
    store.index_write(&[IndexWrite::upsert("$1", "!a", "@u:s", 10, None, "first")]).await.unwrap();
    store.index_write(&[IndexWrite::upsert("$2", "!a", "@u:s", 11, Some("$root"), "second")]).await.unwrap();
    store.index_write(&[IndexWrite::upsert("$3", "!b", "@v:s", 12, None, "third")]).await.unwrap();
    assert_eq!(store.index_backlog(None).await.unwrap(), 3);

    // An edit of a pending message replaces its text and keeps its order, sender and time.
    store.index_write(&[IndexWrite::upsert("$1", "!a", "@u:s", 99, None, "first, edited")]).await.unwrap();
    let due = store.index_due(10).await.unwrap();
    assert_eq!(due.iter().map(|j| j.event_id.as_str()).collect::<Vec<_>>(), ["$1", "$2", "$3"]);
    assert_eq!(
        due[0].op,
        IndexOp::Upsert { sender: "@u:s".into(), ts: 10, thread_id: None, body: "first, edited".into() }
    );
    assert!(matches!(&due[1].op, IndexOp::Upsert { thread_id: Some(t), .. } if t == "$root"));
    assert_eq!(store.index_due(2).await.unwrap().len(), 2, "limit");

    // A redaction turns the pending job into a delete, and a later edit cannot undo it.
    store.index_write(&[IndexWrite::delete("$2", "!a")]).await.unwrap();
    store.index_write(&[IndexWrite::upsert("$2", "!a", "@u:s", 11, None, "edited after redaction")]).await.unwrap();
    let due = store.index_due(10).await.unwrap();
    assert_eq!(due[1].op, IndexOp::Delete);

    // Done removes only the version the indexer saw: an edit meanwhile stays queued.
    let seen = due.clone();
    store.index_write(&[IndexWrite::upsert("$3", "!b", "@v:s", 12, None, "third, edited")]).await.unwrap();
    store.index_done(&seen).await.unwrap();
    let left = store.index_due(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event_id, "$3");
    assert!(matches!(&left[0].op, IndexOp::Upsert { body, .. } if body == "third, edited"));

    // A failed job waits for its back-off and counts the attempt.
    store.index_retry_at(&left, now_ms() + 60_000).await.unwrap();
    assert!(store.index_due(10).await.unwrap().is_empty());
    assert_eq!(store.index_backlog(None).await.unwrap(), 1);
    store.index_retry_at(&left, 0).await.unwrap();
    let again = store.index_due(10).await.unwrap();
    assert_eq!(again[0].attempts, 2);

    // A delete of an event never queued (its upsert was already done) is queued on its own.
    store.index_write(&[IndexWrite::delete("$9", "!a")]).await.unwrap();
    assert_eq!(store.index_backlog(None).await.unwrap(), 2);
    assert_eq!(store.index_backlog(Some("!b")).await.unwrap(), 1);
    assert_eq!(store.index_backlog(Some("!c")).await.unwrap(), 0);

    // A job given up on leaves the queue and is counted for its room; a version replaced
    // meanwhile is not given up on.
    let third = store.index_due(10).await.unwrap().into_iter().find(|j| j.event_id == "$3").unwrap();
    store.index_fail(&third, "refused").await.unwrap();
    assert_eq!(store.index_backlog(Some("!b")).await.unwrap(), 0);
    assert_eq!(store.index_failed("!b").await.unwrap(), 1);
    assert_eq!(store.index_failed("!a").await.unwrap(), 0);
    store.index_write(&[IndexWrite::upsert("$4", "!b", "@v:s", 13, None, "fourth")]).await.unwrap();
    let fourth = store.index_due(10).await.unwrap().into_iter().find(|j| j.event_id == "$4").unwrap();
    store.index_write(&[IndexWrite::upsert("$4", "!b", "@v:s", 13, None, "fourth, edited")]).await.unwrap();
    store.index_fail(&fourth, "refused").await.unwrap();
    assert_eq!(store.index_backlog(Some("!b")).await.unwrap(), 1, "the edit keeps its chances");
    assert_eq!(store.index_failed("!b").await.unwrap(), 1);
}

fn history(id: &str, body: &str) -> HistoryMessage {
    HistoryMessage { event_id: id.into(), sender: "@u:s".into(), ts: 5, thread_id: None, body: body.into() }
}

async fn backfill_contract(store: Store) {
    assert!(store.backfill_due().await.unwrap().is_none());
    assert!(store.backfill_start("!r", 250, false).await.unwrap());
    // A replayed join keeps the backfill as far as it got.
    assert!(!store.backfill_start("!r", 999, false).await.unwrap());
    let b = store.backfill_due().await.unwrap().unwrap();
    assert_eq!((b.room_id.as_str(), b.next_token, b.max_events, b.fetched, b.done), ("!r", None, 250, 0, false));

    // A page queues its messages and moves the checkpoint in one step. History comes newest
    // first: a message already queued (live, or by a newer edit) keeps its text, and a message
    // known to be redacted is not queued at all.
    store.index_write(&[IndexWrite::upsert("$live", "!r", "@u:s", 9, None, "edited text")]).await.unwrap();
    store.index_write(&[IndexWrite::delete("$gone", "!r")]).await.unwrap();
    let gone: Vec<_> = store.index_due(10).await.unwrap().into_iter().filter(|j| j.event_id == "$gone").collect();
    store.index_done(&gone).await.unwrap();
    let messages = [history("$live", "original text"), history("$gone", "secret"), history("$old", "old news")];
    let page = BackfillPage { messages: &messages, events: 100, next_token: Some("t1"), done: false };
    store.backfill_page("!r", &page).await.unwrap();
    let queued = store.index_due(10).await.unwrap();
    let ids: Vec<&str> = queued.iter().map(|j| j.event_id.as_str()).collect();
    assert_eq!(ids, ["$live", "$old"]);
    assert!(matches!(&queued[0].op, IndexOp::Upsert { body, .. } if body == "edited text"));
    let b = store.backfill("!r").await.unwrap().unwrap();
    assert_eq!((b.next_token.as_deref(), b.fetched, b.queued), (Some("t1"), 100, 3));

    // A failed page backs off with its reason; the next good page clears it.
    store.backfill_retry_at("!r", now_ms() + 60_000, "homeserver down").await.unwrap();
    assert!(store.backfill_due().await.unwrap().is_none());
    let b = store.backfill("!r").await.unwrap().unwrap();
    assert_eq!((b.attempts, b.error.as_deref()), (1, Some("homeserver down")));
    store.backfill_retry_at("!r", 0, "homeserver down").await.unwrap();
    let page = BackfillPage { messages: &[], events: 7, next_token: None, done: true };
    store.backfill_page("!r", &page).await.unwrap();
    let b = store.backfill("!r").await.unwrap().unwrap();
    assert_eq!((b.fetched, b.done, b.attempts, b.error), (107, true, 0, None));
    assert!(store.backfill_due().await.unwrap().is_none(), "a finished backfill is not due");

    // `!index backfill` starts over from the newest event; leaving the room stops it, and a
    // re-join reads back only to when the agent left.
    assert!(store.backfill_start("!r", 50, true).await.unwrap());
    let b = store.backfill_due().await.unwrap().unwrap();
    assert_eq!((b.next_token, b.max_events, b.fetched, b.done), (None, 50, 0, false));
    store.backfill_stop("!r", "forbidden").await.unwrap();
    assert_eq!(store.backfill("!r").await.unwrap().unwrap().error.as_deref(), Some("forbidden"));
    assert!(store.backfill_start("!r", 50, true).await.unwrap());
    store.room_left("!r", now_ms()).await.unwrap();
    assert!(store.backfill("!r").await.unwrap().unwrap().done, "stopped");
    let left = store.room_left_at("!r").await.unwrap().unwrap();
    store.backfill_since("!r", 50, left).await.unwrap();
    let b = store.backfill_due().await.unwrap().unwrap();
    assert_eq!((b.until_ts, b.fetched, b.done), (Some(left), 0, false));
    assert!(store.backfill_start("!r", 50, true).await.unwrap());
    assert_eq!(store.backfill("!r").await.unwrap().unwrap().until_ts, None, "an explicit backfill reads it all");
}

#[tokio::test]
async fn sqlite_backfill_contract() {
    let dir = tempfile::tempdir().unwrap();
    backfill_contract(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_backfill_contract() {
    backfill_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_index_queue_contract() {
    let dir = tempfile::tempdir().unwrap();
    index_queue_contract(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_index_queue_contract() {
    index_queue_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

fn new_job(room: &str, trigger: &str, sender: &str) -> conclave_agent::store::NewJob {
    conclave_agent::store::NewJob {
        kind: "chat".into(),
        room_id: room.into(),
        trigger_event_id: trigger.into(),
        sender: sender.into(),
        trigger_event: format!(r#"{{"event_id":"{trigger}"}}"#),
        payload: r#"{"question":"why?"}"#.into(),
        label: format!("answer to {sender}"),
    }
}

/// Jobs: written with their trigger's removal from the inbox (once per trigger), claimed one at a
/// time with a counted attempt, recovered after a crash, cancelled, retried, finished and pruned.
async fn jobs_contract(store: Store) {
    use conclave_agent::store::{CancelTarget, JobState, Write};
    assert!(store.ingest("j1", vec![ev("!r", "$q1", "{}"), ev("!r", "$q2", "{}")]).await.unwrap());
    let items = claim_all(&store, &[]).await;
    let writes = [Write::Job(new_job("!r", "$q1", "@a:s")), Write::Job(new_job("!r", "$q2", "@b:s"))];
    store.inbox_done(&[items[0].seq], &writes[..1]).await.unwrap();
    // A replayed trigger adds no second job.
    store.inbox_done(&[items[1].seq], &[writes[0].clone(), writes[1].clone()]).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);
    assert_eq!(store.jobs_active_counts("!r", "@a:s").await.unwrap(), (2, 1));
    assert_eq!(store.jobs_active_counts("!other", "@c:s").await.unwrap(), (0, 0));

    let queued = store.jobs_queued("chat", 10).await.unwrap();
    let ids: Vec<&str> = queued.iter().map(|j| j.trigger_event_id.as_str()).collect();
    assert_eq!(ids, ["$q1", "$q2"], "oldest first");
    assert!(store.jobs_queued("backend", 10).await.unwrap().is_empty());
    let (first, second) = (queued[0].id, queued[1].id);

    // Claiming counts the attempt, once: a second claim of a running job gets nothing.
    let job = store.job_claim(first).await.unwrap().expect("queued");
    assert_eq!((job.state, job.attempts, job.label.as_str()), (JobState::Running, 1, "answer to @a:s"));
    assert!(store.job_claim(first).await.unwrap().is_none());
    store.job_set_status_event(first, "$status").await.unwrap();
    store.job_set_result_event(first, "$answer").await.unwrap();
    // Found by its trigger, its status and its result message.
    for event in ["$q1", "$status", "$answer"] {
        assert_eq!(store.job_by_event("!r", event).await.unwrap().map(|j| j.id), Some(first), "{event}");
    }
    assert!(store.job_by_event("!elsewhere", "$q1").await.unwrap().is_none(), "rooms never mix");
    assert_eq!(store.job_latest_of("!r", "@b:s").await.unwrap().map(|j| j.id), Some(second));

    // A crash: the running job is queued again, its attempt and messages kept.
    assert_eq!(store.jobs_recover().await.unwrap(), 1);
    let again = store.job_claim(first).await.unwrap().expect("queued again");
    assert_eq!((again.attempts, again.result_event_id.as_deref()), (2, Some("$answer")));
    // A retry waits; a graceful shutdown gives the attempt back.
    store.job_retry_at(first, now_ms() + 60_000, "homeserver down").await.unwrap();
    let waiting = store.job(first).await.unwrap().unwrap();
    assert_eq!((waiting.state, waiting.error.as_deref()), (JobState::Queued, Some("homeserver down")));
    assert!(waiting.not_before > now_ms());
    let running = store.job_claim(first).await.unwrap().unwrap();
    store.job_requeue(first).await.unwrap();
    assert_eq!(store.job(first).await.unwrap().unwrap().attempts, running.attempts - 1);

    // Cancels are flags (written with an event's removal); a queued one ends at once.
    store
        .inbox_done(&[], &[Write::Cancel { target: CancelTarget::Trigger("$q2".into()), by: "@b:s".into() }])
        .await
        .unwrap();
    let asked = store.jobs_cancel_requested().await.unwrap();
    assert_eq!(asked.iter().map(|j| j.id).collect::<Vec<_>>(), [second]);
    assert_eq!(asked[0].cancelled_by.as_deref(), Some("@b:s"));
    assert!(store.job_cancel_queued(second).await.unwrap());
    assert!(!store.job_cancel_queued(second).await.unwrap(), "once");
    assert!(store.jobs_cancel_requested().await.unwrap().is_empty(), "a job that is over needs no cancel");
    // A cancel of a job that is over changes nothing.
    store.inbox_done(&[], &[Write::Cancel { target: CancelTarget::Id(second), by: "@x:s".into() }]).await.unwrap();
    assert_eq!(store.job(second).await.unwrap().unwrap().cancelled_by.as_deref(), Some("@b:s"));

    store.job_claim(first).await.unwrap().unwrap();
    store.job_finish(first, JobState::Done, None).await.unwrap();
    assert!(store.jobs_in_room("!r").await.unwrap().is_empty());
    assert_eq!(store.jobs_active_counts("!r", "@a:s").await.unwrap(), (0, 0));
    assert_eq!(store.jobs_prune(now_ms() - 60_000).await.unwrap(), 0, "recent ones are kept");
    assert_eq!(store.jobs_prune(now_ms() + 1).await.unwrap(), 2);
    store.close().await;
}

#[tokio::test]
async fn sqlite_jobs_contract() {
    let dir = tempfile::tempdir().unwrap();
    jobs_contract(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_jobs_contract() {
    jobs_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

/// The hourly clean-up removes the bookkeeping older than its cutoffs, and nothing newer.
async fn prune_contract(store: Store) {
    use conclave_agent::store::{Cutoffs, Write, today};
    // One row in each pruned table.
    assert!(store.ingest("p1", vec![ev("!p", "$dead", "{}")]).await.unwrap());
    let dead = claim_all(&store, &[]).await;
    store.inbox_dead_letter(dead[0].seq, "boom").await.unwrap();
    let edit = Write::Edit { edit: "$edit".into(), original: "$orig".into(), room_id: "!p".into() };
    store.inbox_done(&[], &[edit, IndexWrite::delete("$gone", "!p").into()]).await.unwrap();
    store.index_write(&[IndexWrite::upsert("$bad", "!p", "@u:s", 1, None, "refused")]).await.unwrap();
    let job = store.index_due(10).await.unwrap().into_iter().find(|j| j.event_id == "$bad").unwrap();
    store.index_fail(&job, "refused").await.unwrap();
    store.remember_card_message("!p", "$note", "c1").await.unwrap();
    store.record_usage("!p", "@u:s", "m", 1, 1).await.unwrap();
    store.planka_intent("!p", "$write").await.unwrap();

    let all = |cutoff: i64, day: i64| Cutoffs {
        jobs_ms: cutoff,
        dead_letters_ms: cutoff,
        index_notes_ms: cutoff,
        task_messages_ms: cutoff,
        usage_day: day,
    };
    let removed = store.prune(&all(now_ms() - 60_000, today() - 1)).await.unwrap();
    assert!(removed.iter().all(|(_, n)| *n == 0), "nothing recent goes: {removed:?}");
    assert_eq!(store.edit_original("$edit").await.unwrap().as_deref(), Some("$orig"));

    let removed = store.prune(&all(now_ms() + 1, today() + 1)).await.unwrap();
    for table in
        ["dead_letters", "index_redacted", "index_failures", "index_edits", "task_messages", "usage", "planka_intents"]
    {
        assert_eq!(removed.iter().find(|(t, _)| *t == table).map(|(_, n)| *n), Some(1), "{table}: {removed:?}");
    }
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
    assert_eq!(store.edit_original("$edit").await.unwrap(), None);
    assert_eq!(store.card_of_message("!p", "$note").await.unwrap(), None);
    assert_eq!(store.room_usage("!p", today()).await.unwrap().requests, 0);
    assert!(!store.planka_intent("!p", "$write").await.unwrap().earlier, "its intent went");
    store.close().await;
}

#[tokio::test]
async fn sqlite_prune_contract() {
    let dir = tempfile::tempdir().unwrap();
    prune_contract(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_prune_contract() {
    prune_contract(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}

/// Every string the homeserver can send is storable, alike on both stores (issue 18 point 1): a
/// NUL (legal JSON, and Synapse delivers it) becomes U+FFFD wherever it is decoded text; quotes,
/// backslashes, SQL and a megabyte pass unchanged.
async fn hostile_text(store: Store) {
    let odd = "a\0b '; DROP TABLE inbox; -- \" \\ \u{1F600}";
    let shown = odd.replace('\0', "\u{FFFD}");
    let big = "x".repeat(1 << 20);
    let json = serde_json::json!({ "body": odd }).to_string();
    assert!(json.contains("\\u0000"), "the JSON carries the NUL escaped: {json}");

    // A txn id with a NUL (`%00` in the path) is stored and its retry recognised.
    assert!(store.ingest("t\0x", vec![ev("!h", "$n", &json), ev("!h", "$big", &big)]).await.unwrap());
    assert!(!store.ingest("t\0x", vec![ev("!h", "$n", &json), ev("!h", "$big", &big)]).await.unwrap());
    let items = claim_all(&store, &[]).await;
    assert_eq!(items[0].event, json, "event JSON is kept byte for byte");
    assert_eq!(items[1].event.len(), big.len());

    // The decoded body (raw NUL) goes to the index queue in the step that removes the events.
    let writes = [
        IndexWrite::upsert("$n", "!h", "@u:s", 1, None, odd).into(),
        IndexWrite::upsert("$big", "!h", "@u:s", 2, None, &big).into(),
    ];
    store.inbox_done(&[items[0].seq, items[1].seq], &writes).await.unwrap();
    assert_eq!(store.inbox_len().await.unwrap(), 0);
    let due = store.index_due(10).await.unwrap();
    let body = |id: &str| match &due.iter().find(|j| j.event_id == id).unwrap().op {
        IndexOp::Upsert { body, .. } => body.clone(),
        IndexOp::Delete => panic!("an upsert"),
    };
    assert_eq!(body("$n"), shown);
    assert_eq!(body("$big"), big);
    store.index_done(&due).await.unwrap();

    // An error text holding a NUL (it quotes the event) sets the event aside all the same.
    assert!(store.ingest("t2", vec![ev("!h", "$d", "{}")]).await.unwrap());
    let item = claim_all(&store, &[]).await.remove(0);
    store.inbox_dead_letter(item.seq, odd).await.unwrap();
    assert_eq!(store.dead_letters().await.unwrap()[0].error, shown);

    // A history page holding such a message moves on (it does not retry forever).
    assert!(store.backfill_start("!h", 10, false).await.unwrap());
    let messages = [history("$old", odd)];
    let page = BackfillPage { messages: &messages, events: 1, next_token: Some("t\0"), done: false };
    store.backfill_page("!h", &page).await.unwrap();
    assert_eq!(store.backfill("!h").await.unwrap().unwrap().fetched, 1);
    assert_eq!(store.index_due(10).await.unwrap().len(), 1);
    store.backfill_retry_at("!h", 0, odd).await.unwrap();
    assert_eq!(store.backfill("!h").await.unwrap().unwrap().error.as_deref(), Some(shown.as_str()));
    store.close().await;
}

#[tokio::test]
async fn sqlite_stores_hostile_text() {
    let dir = tempfile::tempdir().unwrap();
    hostile_text(Store::connect(&format!("sqlite://{}/agent.db", dir.path().display())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_stores_hostile_text() {
    hostile_text(Store::connect(&postgres().fresh_database().await).await.unwrap()).await;
}
