//! Retrieval over room history: the vector store client, the embedder, the indexer that feeds
//! them from the durable queue, the backfill that queues earlier history, and search.
//!
//! Records are keyed by event id and always carry their room; every query names the rooms it may
//! search ([`Scope`]), so nothing in one room can surface in another (invariant 4).

pub mod chroma;
pub mod indexer;

pub use chroma::{ChromaClient, ChromaError, Hit, Record, RecordMeta, Scope, SeenRoom, StoredRecord, Window};

use crate::config::Config;
use crate::llm::{EmbedKind, LlmClient, LlmError, Prefixes};
use std::time::Duration;

/// Deadline of one embeddings request (a batch of texts on a CPU embedder) and of one Chroma call.
const EMBED_TIMEOUT: Duration = Duration::from_secs(30);
const CHROMA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("the embeddings server failed")]
    Embed(#[from] LlmError),
    #[error(transparent)]
    Chroma(#[from] ChromaError),
}

impl RagError {
    /// An outage (worth waiting for), as opposed to a refusal of this request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Embed(e) => e.is_transient(),
            Self::Chroma(e) => e.is_transient(),
        }
    }

    /// What failed, in words for a chat room.
    pub fn public(&self) -> String {
        match self {
            Self::Embed(e) => e.public().replace("the model server", "the embeddings server"),
            Self::Chroma(e) => e.public(),
        }
    }

    /// A refusal of this input in particular (the server read it and said no: 400, 413, 422), as
    /// opposed to a failure that would hit every request alike — an unreachable or overloaded server,
    /// a wrong URL or model (404), a missing key (401, 403) — which is an outage to wait out.
    pub fn is_refusal_of_input(&self) -> bool {
        let status = match self {
            Self::Embed(LlmError::Api { status, .. }) => Some(*status),
            Self::Embed(_) => None,
            Self::Chroma(ChromaError::InvalidArgument { status, .. }) => Some(*status),
            Self::Chroma(_) => None,
        };
        matches!(status, Some(400 | 413 | 422))
    }
}

/// The embedder and the vector store, as configured (`[llm] embedding_*`, `[chroma]`).
#[derive(Debug, Clone)]
pub struct Rag {
    pub chroma: ChromaClient,
    pub embedder: LlmClient,
    pub model: String,
    pub prefixes: Prefixes,
}

impl Rag {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let llm = &config.llm;
        let url = if llm.embedding_base_url.is_empty() { &llm.base_url } else { &llm.embedding_base_url };
        Ok(Self {
            chroma: ChromaClient::new(&config.chroma, CHROMA_TIMEOUT)?,
            embedder: LlmClient::new(url, &llm.api_key, EMBED_TIMEOUT)?,
            model: llm.embedding_model.clone(),
            prefixes: Prefixes {
                query: llm.embedding_query_prefix.clone(),
                document: llm.embedding_document_prefix.clone(),
            },
        })
    }

    /// Vectors of messages to store.
    pub async fn embed_documents(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.embedder.embed(&self.model, EmbedKind::Document, &self.prefixes, texts).await
    }

    /// The `n` stored messages within `scope` nearest to `query`, nearest first. Only the scope's
    /// rooms are searched (invariant 4); an empty scope finds nothing without asking anyone.
    pub async fn search(&self, scope: &Scope, query: &str, n: usize) -> Result<Vec<Hit>, RagError> {
        if scope.is_empty() {
            return Ok(Vec::new());
        }
        let vector = self.embedder.embed(&self.model, EmbedKind::Query, &self.prefixes, &[query]).await?;
        let vector = vector.into_iter().next().unwrap_or_default();
        Ok(self.chroma.query(&vector, n, scope).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_of_the_input_counts_against_a_message() {
        let api = |status| RagError::Embed(LlmError::Api { url: "u".into(), status, message: "m".into() });
        let chroma =
            |status| RagError::Chroma(ChromaError::InvalidArgument { status, error: "e".into(), message: "m".into() });
        let cases: &[(&str, RagError, bool)] = &[
            ("text refused", api(400), true),
            ("text too large", api(413), true),
            ("unprocessable", api(422), true),
            ("record refused by Chroma", chroma(400), true),
            ("no /v1/embeddings there", api(404), false),
            ("no key", api(401), false),
            ("forbidden", api(403), false),
            ("server error", api(500), false),
            ("bad gateway", api(502), false),
            ("rate limited", api(429), false),
            ("unreachable", RagError::Embed(LlmError::Unreachable { url: "u".into(), reason: "r".into() }), false),
            ("timeout", RagError::Embed(LlmError::Timeout { url: "u".into(), secs: 30 }), false),
            ("unknown model", RagError::Embed(LlmError::ModelNotFound { model: "m".into(), url: "u".into() }), false),
            (
                "no collection",
                RagError::Chroma(ChromaError::NotFound { error: "e".into(), message: "m".into() }),
                false,
            ),
        ];
        for (name, error, refusal) in cases {
            assert_eq!(error.is_refusal_of_input(), *refusal, "{name}");
        }
    }
}
