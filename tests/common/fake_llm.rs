//! A fake OpenAI-compatible server that streams `/v1/chat/completions` exactly like Ollama's
//! (role deltas, an empty final delta with `finish_reason: "stop"`, a usage chunk with
//! `choices: []` when asked, `data: [DONE]`), with models that behave like the odd real ones.
//! Ollama cannot run here; this is the only fake in the chat tests.

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Models and how they behave.
pub const MODELS: &[&str] = &[
    "llama3.1:8b",        // plain answers
    "qwen3:think",        // `<think>…</think>` before the answer, split across chunks
    "gpt-oss:reasoning",  // Ollama's `delta.reasoning` chunks before the answer
    "llamacpp:reasoning", // llama.cpp's `reasoning_content`
    "empty-finish",       // `finish_reason: ""` on every chunk but the last
    "slow",               // first token after 3 s
    "cut",                // disconnects after two chunks, no [DONE]
    "boom",               // 500
    "o-new",              // rejects `max_tokens` (wants `max_completion_tokens`)
];

#[derive(Default)]
struct Inner {
    requests: Vec<Value>,
    embedding_requests: Vec<Value>,
    reply: Option<String>,
    /// Pause between streamed words (default 5 ms).
    word_delay: Option<Duration>,
}

#[derive(Clone)]
pub struct FakeLlm {
    /// API root, like `http://127.0.0.1:11434/v1`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeLlm {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        // Like Ollama (Go sets TCP_NODELAY): each SSE chunk leaves at once, not after a delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// The text every following answer streams (default: "You said: <last user message>"); `{last}`
    /// in it stands for the last user message.
    pub fn set_reply(&self, reply: &str) {
        self.inner.lock().unwrap().reply = Some(reply.to_owned());
    }

    /// Paces the stream: the pause between words.
    pub fn set_word_delay(&self, delay: Duration) {
        self.inner.lock().unwrap().word_delay = Some(delay);
    }

    /// Every chat request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Every embeddings request body received so far.
    pub fn embedding_requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().embedding_requests.clone()
    }
}

async fn models() -> Json<Value> {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_732_000_000, "owned_by": "library"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Like a strict OpenAI server: refuses fields it does not know (`input_type`). Texts containing
/// "poison" are refused (400); the others get a 3-dim vector.
async fn embeddings(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    inner.lock().unwrap().embedding_requests.push(body.clone());
    if body.get("input_type").is_some() {
        return error(StatusCode::BAD_REQUEST, "Unrecognized request argument supplied: input_type");
    }
    let inputs: Vec<&str> = body["input"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if inputs.iter().any(|t| t.contains("poison")) {
        return error(StatusCode::BAD_REQUEST, "this input is refused");
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f32, 1.0, (i + 1) as f32]}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}});
    (status, Json(body)).into_response()
}

async fn completions(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let (reply, word_delay) = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(body.clone());
        (inner.reply.clone(), inner.word_delay.unwrap_or(Duration::from_millis(5)))
    };
    if !MODELS.contains(&model.as_str()) {
        // Ollama's words and status for a model it does not have.
        return error(StatusCode::NOT_FOUND, &format!("model \"{model}\" not found, try pulling it first"));
    }
    match model.as_str() {
        "boom" => return error(StatusCode::INTERNAL_SERVER_ERROR, "llama runner process has terminated"),
        "o-new" if body.get("max_tokens").is_some() => {
            let body = json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                                        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
        _ => {}
    }
    let last_user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let text = reply.map_or_else(|| format!("You said: {last_user}"), |r| r.replace("{last}", &last_user));
    let include_usage = body["stream_options"]["include_usage"] == true;
    let prompt_chars: usize =
        body["messages"].as_array().map_or(0, |m| m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum());

    let mut events: Vec<(Duration, Value)> = Vec::new();
    let delta = |content: Value, finish: Value| {
        json!({"id": "chatcmpl-42", "object": "chat.completion.chunk", "created": 1_732_000_000, "model": model,
               "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}]})
    };
    let no_finish = if model == "empty-finish" { json!("") } else { Value::Null };
    let first_delay = if model == "slow" { Duration::from_secs(3) } else { Duration::ZERO };
    match model.as_str() {
        "qwen3:think" => {
            for piece in ["<thi", "nk>I should be brief.</th", "ink>"] {
                events.push((Duration::ZERO, delta(json!(piece), no_finish.clone())));
            }
        }
        "gpt-oss:reasoning" => {
            let mut d = delta(json!(""), Value::Null);
            d["choices"][0]["delta"]["reasoning"] = json!("Thinking about it.");
            events.push((Duration::ZERO, d));
        }
        "llamacpp:reasoning" => {
            let mut d = delta(Value::Null, Value::Null);
            d["choices"][0]["delta"]["reasoning_content"] = json!("Thinking about it.");
            events.push((Duration::ZERO, d));
        }
        _ => {}
    }
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    for (i, w) in words.iter().enumerate() {
        let wait = if i == 0 { first_delay } else { word_delay };
        events.push((wait, delta(json!(w), no_finish.clone())));
    }
    events.push((Duration::ZERO, delta(json!(""), json!("stop"))));
    if include_usage {
        events.push((Duration::ZERO, json!({"id": "chatcmpl-42", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": prompt_chars / 4, "completion_tokens": words.len(), "total_tokens": prompt_chars / 4 + words.len()}})));
    }
    let cut = model == "cut";
    let stream =
        futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, (wait, event))| async move {
            tokio::time::sleep(wait).await;
            if cut && i == 2 {
                return Err(std::io::Error::other("connection dropped"));
            }
            Ok::<_, std::io::Error>(Bytes::from(format!("data: {event}\n\n")))
        });
    let done = futures_util::stream::once(async { Ok(Bytes::from_static(b"data: [DONE]\n\n")) });
    let body = Body::from_stream(stream.chain(done));
    Response::builder().header("content-type", "text/event-stream").body(body).unwrap()
}
