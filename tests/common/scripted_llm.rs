//! A scripted model behind an OpenAI-compatible `/v1/chat/completions`, for driving a real coding
//! agent (pi) through a fixed plan: each request gets the next step — a tool call or a text — as
//! an SSE stream shaped like OpenAI's (tool-call deltas, `finish_reason: "tool_calls"`, a usage
//! chunk when asked, `data: [DONE]`). A real agent, a fake brain.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One answer of the model.
#[derive(Clone, Debug)]
pub enum Step {
    /// Calls tool `name` with these arguments.
    Tool {
        name: String,
        arguments: Value,
    },
    Text(String),
}

#[derive(Default)]
struct Inner {
    steps: VecDeque<Step>,
    requests: Vec<Value>,
}

#[derive(Clone)]
pub struct ScriptedLlm {
    /// API root, like `http://127.0.0.1:PORT/v1`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

pub const MODEL: &str = "scripted";

impl ScriptedLlm {
    pub async fn start(steps: Vec<Step>) -> Self {
        let inner = Arc::new(Mutex::new(Inner { steps: steps.into(), requests: Vec::new() }));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]})) }),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn completions(State(inner): State<Arc<Mutex<Inner>>>, Json(body): Json<Value>) -> Response {
    let step = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(body.clone());
        inner.steps.pop_front().unwrap_or_else(|| Step::Text("Done.".into()))
    };
    let n = inner.lock().unwrap().requests.len();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "created": 1_732_000_000,
               "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    match &step {
        Step::Tool { name, arguments } => {
            let call = json!([{"index": 0, "id": format!("call_{n}"), "type": "function",
                               "function": {"name": name, "arguments": arguments.to_string()}}]);
            events.push(chunk(json!({"tool_calls": call}), Value::Null));
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        Step::Text(text) => {
            events.push(chunk(json!({"content": text}), Value::Null));
            events.push(chunk(json!({}), json!("stop")));
        }
    }
    if body["stream_options"]["include_usage"] == true {
        events.push(json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "choices": [],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}));
    }
    if body["stream"] != true {
        let message = match step {
            Step::Tool { name, arguments } => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}),
            Step::Text(text) => json!({"role": "assistant", "content": text}),
        };
        return Json(json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion", "model": MODEL,
                           "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}))
        .into_response();
    }
    let mut sse: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    sse.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], sse).into_response()
}
