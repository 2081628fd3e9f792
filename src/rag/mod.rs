//! Retrieval over room history: the vector store client, the embedder, the indexer that feeds
//! them from the durable queue, the backfill that queues earlier history, and search.
//!
//! Records are keyed by event id and always carry their room; every query names the rooms it may
//! search ([`Scope`]), so nothing in one room can surface in another (invariant 4).

pub mod chroma;
pub mod indexer;

pub use chroma::{ChromaClient, ChromaError, Hit, Record, RecordMeta, Scope, StoredRecord};

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
