//! The LLM backend: an OpenAI-compatible chat API (Ollama's `/v1` in the container; any compatible
//! server works) through async-openai's bring-your-own-types calls, so the quirks of real servers
//! are handled here: `finish_reason: ""`, Ollama's `delta.reasoning`, llama.cpp's
//! `reasoning_content`, `<think>` blocks in the text, and `max_tokens` vs `max_completion_tokens`.

mod embed;
mod think;

pub use embed::{EMBED_BATCH, EmbedKind, Prefixes};
pub use think::ThinkFilter;

use crate::secret::Secret;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the language model server at {url} cannot be reached ({reason})")]
    Unreachable { url: String, reason: String },
    #[error("the language model server at {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("the model `{model}` does not exist on {url}")]
    ModelNotFound { model: String, url: String },
    #[error("the language model server at {url} answered {status}: {message}")]
    Api { url: String, status: u16, message: String },
    #[error("the answer stream from {url} broke off: {reason}")]
    Broken { url: String, reason: String },
}

impl LlmError {
    /// What failed, in words for a chat room: no address, no server text (those go to the log).
    pub fn public(&self) -> String {
        match self {
            Self::Unreachable { .. } => "the model server cannot be reached".into(),
            Self::Timeout { secs, .. } => format!("the model server did not answer within {secs} s"),
            Self::ModelNotFound { model, .. } => format!("the model “{model}” does not exist on the model server"),
            Self::Api { status, .. } => format!("the model server answered with an error (HTTP {status})"),
            Self::Broken { .. } => "the answer stream from the model server broke off".into(),
        }
    }

    /// Worth trying another server (the fallback) or later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Broken { .. } => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::ModelNotFound { .. } => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// Token counts, from the server's usage chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// What a chat stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Visible answer text (reasoning and `<think>` blocks already removed).
    Text(String),
    Usage(Usage),
    /// The model finished (`stop`, `length`, …).
    Finished(String),
}

pub type DeltaStream = Pin<Box<dyn Stream<Item = Result<Delta, LlmError>> + Send>>;

/// One chunk of `/v1/chat/completions` with `stream: true`, as real servers send it.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: ChunkDelta,
    /// Some servers send `""` rather than `null` while the answer is still going.
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
    // `reasoning` (Ollama) and `reasoning_content` (llama.cpp, vLLM) are never shown: not even
    // deserialized.
}

#[derive(Debug, Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
struct ModelEntry {
    id: String,
}

#[derive(Clone)]
pub struct LlmClient {
    client: Client<OpenAIConfig>,
    base_url: String,
    timeout: Duration,
    /// Set once the server refused the embeddings' `input_type` field; shared by clones.
    no_input_type: Arc<AtomicBool>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl LlmClient {
    /// `base_url` is the API root (`http://127.0.0.1:11434/v1`); `timeout` bounds a whole request,
    /// a streamed answer included.
    pub fn new(base_url: &str, api_key: &Secret, timeout: Duration) -> Result<Self, LlmError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        // The deadline of an answer is enforced on the stream (see `chat_stream`), where it can be
        // reported as a timeout; reqwest's limit is only a backstop.
        let http = reqwest::Client::builder()
            .timeout(timeout + Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()
            .map_err(|e| LlmError::Unreachable { url: base_url.clone(), reason: e.to_string() })?;
        // The key is always set explicitly, so OPENAI_API_KEY from the environment is never used.
        let config = OpenAIConfig::new().with_api_base(&base_url).with_api_key(api_key.expose());
        Ok(Self {
            client: Client::with_config(config).with_http_client(http),
            base_url,
            timeout,
            no_input_type: Arc::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The model ids the server offers (`GET /v1/models`).
    pub async fn models(&self) -> Result<Vec<String>, LlmError> {
        let list: ModelList = self.client.models().list_byot().await.map_err(|e| self.error(e, ""))?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    /// Streams an answer. `max_tokens` is sent as `max_tokens`; a server that wants
    /// `max_completion_tokens` instead (newer OpenAI models) gets the request again with that.
    pub async fn chat_stream(
        &self,
        model: &str,
        messages: &[Message],
        max_tokens: Option<u32>,
    ) -> Result<DeltaStream, LlmError> {
        let mut body = json!({
            "model": model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(n) = max_tokens {
            body["max_tokens"] = json!(n);
        }
        let stream = match self.client.chat().create_stream_byot::<_, Chunk>(&body).await {
            Err(OpenAIError::ApiError(e))
                if max_tokens.is_some() && e.api_error.message.contains("max_completion_tokens") =>
            {
                let n = body.as_object_mut().and_then(|o| o.remove("max_tokens")).unwrap_or_default();
                body["max_completion_tokens"] = n;
                self.client.chat().create_stream_byot::<_, Chunk>(&body).await
            }
            other => other,
        }
        .map_err(|e| self.error(e, model))?;

        let url = self.base_url.clone();
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Each chunk must arrive before the answer's deadline; a timeout or error ends the stream.
        let bounded = futures_util::stream::unfold(Some(stream), move |stream| {
            let url = url.clone();
            async move {
                let mut stream = stream?;
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                    Ok(Some(Err(e))) => Some((Err(LlmError::Broken { url, reason: e.to_string() }), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(LlmError::Timeout { url, secs: timeout.as_secs() }), None)),
                }
            }
        });
        let mut think = ThinkFilter::default();
        let deltas = bounded.flat_map(move |chunk| {
            let items: Vec<Result<Delta, LlmError>> = match chunk {
                Ok(chunk) => deltas_of(chunk, &mut think),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(items)
        });
        Ok(Box::pin(deltas))
    }

    fn error(&self, e: OpenAIError, model: &str) -> LlmError {
        let url = self.base_url.clone();
        match e {
            OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout { url, secs: self.timeout.as_secs() },
            OpenAIError::Reqwest(e) => LlmError::Unreachable { url, reason: crate::error_text::chain(&e) },
            OpenAIError::ApiError(e) if e.status_code == 404 && !model.is_empty() => {
                LlmError::ModelNotFound { model: model.to_owned(), url }
            }
            OpenAIError::ApiError(e) => {
                LlmError::Api { url, status: e.status_code.as_u16(), message: e.api_error.message }
            }
            other => LlmError::Api { url, status: 0, message: other.to_string() },
        }
    }
}

fn deltas_of(chunk: Chunk, think: &mut ThinkFilter) -> Vec<Result<Delta, LlmError>> {
    let mut out = Vec::new();
    for choice in chunk.choices {
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
            let visible = think.push(&text);
            if !visible.is_empty() {
                out.push(Ok(Delta::Text(visible)));
            }
        }
        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
            // A held-back `<thi…` at the very end was plain text after all.
            let rest = think.finish();
            if !rest.is_empty() {
                out.push(Ok(Delta::Text(rest)));
            }
            out.push(Ok(Delta::Finished(reason)));
        }
    }
    if let Some(usage) = chunk.usage {
        out.push(Ok(Delta::Usage(usage)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(json: &str) -> Chunk {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn chunks_of_real_servers() {
        let cases: &[(&str, &str, Vec<Delta>)] = &[
            (
                "ollama text",
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#,
                vec![Delta::Text("Hi".into())],
            ),
            (
                "ollama stop",
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#,
                vec![Delta::Finished("stop".into())],
            ),
            (
                "empty finish reason",
                r#"{"choices":[{"delta":{"content":"a"},"finish_reason":""}]}"#,
                vec![Delta::Text("a".into())],
            ),
            (
                "usage chunk",
                r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
                vec![Delta::Usage(Usage { prompt_tokens: 12, completion_tokens: 3 })],
            ),
            ("ollama reasoning", r#"{"choices":[{"delta":{"content":"","reasoning":"let me think"}}]}"#, vec![]),
            ("llama.cpp reasoning", r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#, vec![]),
            ("role only", r#"{"choices":[{"delta":{"role":"assistant"}}]}"#, vec![]),
        ];
        for (name, json, want) in cases {
            let got: Vec<Delta> =
                deltas_of(chunk(json), &mut ThinkFilter::default()).into_iter().map(Result::unwrap).collect();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn public_words_carry_no_address_and_no_server_text() {
        let (url, said) = ("http://10.1.2.3:11434/v1".to_owned(), "secret internal detail".to_owned());
        let errors = [
            LlmError::Unreachable { url: url.clone(), reason: said.clone() },
            LlmError::Timeout { url: url.clone(), secs: 9 },
            LlmError::ModelNotFound { model: "m".into(), url: url.clone() },
            LlmError::Api { url: url.clone(), status: 500, message: said.clone() },
            LlmError::Broken { url: url.clone(), reason: said.clone() },
        ];
        for e in errors {
            let words = e.public();
            assert!(!words.contains("10.1.2.3") && !words.contains(&said), "{words}");
            assert!(e.to_string().contains("10.1.2.3"), "the log keeps the address: {e}");
        }
    }
}
