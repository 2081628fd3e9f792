//! The LLM client against a fake that streams exactly like Ollama, with the odd servers' quirks.

mod common;

use common::fake_llm::FakeLlm;
use conclave_agent::llm::{Delta, LlmClient, LlmError, Message, Role, Usage};
use conclave_agent::secret::Secret;
use futures_util::StreamExt;
use std::time::Duration;

fn client(url: &str, timeout_secs: u64) -> LlmClient {
    LlmClient::new(url, &Secret::new("sk-test"), Duration::from_secs(timeout_secs)).unwrap()
}

fn ask(text: &str) -> Vec<Message> {
    vec![Message::new(Role::System, "Be brief."), Message::new(Role::User, text)]
}

/// Collects a stream: the visible text, the usage, the finish reason, and the error that ended it.
async fn collect(client: &LlmClient, model: &str) -> (String, Option<Usage>, Option<String>, Option<LlmError>) {
    let mut stream = client.chat_stream(model, &ask("hello there"), None).await.unwrap();
    let (mut text, mut usage, mut finish, mut error) = (String::new(), None, None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(Delta::Text(t)) => text.push_str(&t),
            Ok(Delta::Usage(u)) => usage = Some(u),
            Ok(Delta::Finished(f)) => finish = Some(f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    (text, usage, finish, error)
}

#[tokio::test]
async fn streams_text_usage_and_stop_like_ollama() {
    let fake = FakeLlm::start().await;
    let c = client(&fake.url, 10);
    let (text, usage, finish, error) = collect(&c, "llama3.1:8b").await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "You said: hello there");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert!(usage.is_some_and(|u| u.completion_tokens == 4 && u.prompt_tokens > 0), "{usage:?}");

    let request = &fake.requests()[0];
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(request["messages"][1]["content"], "hello there");
    assert!(request.get("max_tokens").is_none());
}

#[tokio::test]
async fn reasoning_and_think_blocks_are_never_shown() {
    let fake = FakeLlm::start().await;
    let c = client(&fake.url, 10);
    for model in ["qwen3:think", "gpt-oss:reasoning", "llamacpp:reasoning", "empty-finish"] {
        let (text, _, finish, error) = collect(&c, model).await;
        assert!(error.is_none(), "{model}: {error:?}");
        assert_eq!(text, "You said: hello there", "{model}");
        assert_eq!(finish.as_deref(), Some("stop"), "{model}: an empty finish_reason is not the end");
    }
}

#[tokio::test]
async fn failures_are_typed_and_name_the_server() {
    let fake = FakeLlm::start().await;
    let c = client(&fake.url, 10);

    let err = c.chat_stream("no-such-model", &ask("x"), None).await.err().unwrap();
    assert!(matches!(&err, LlmError::ModelNotFound { model, .. } if model == "no-such-model"), "{err}");
    assert!(!err.is_transient());

    let err = c.chat_stream("boom", &ask("x"), None).await.err().unwrap();
    assert!(matches!(err, LlmError::Api { status: 500, .. }), "{err}");
    assert!(err.is_transient() && err.to_string().contains(&fake.url), "{err}");

    // Cut mid-stream: what arrived is kept, then the break is reported.
    let (text, _, finish, error) = collect(&c, "cut").await;
    assert_eq!(text, "You said: ");
    assert!(finish.is_none());
    assert!(matches!(error, Some(LlmError::Broken { .. })), "{error:?}");

    // A first token slower than the timeout.
    let (_, _, _, error) = collect(&client(&fake.url, 1), "slow").await;
    assert!(matches!(error, Some(LlmError::Timeout { secs: 1, .. })), "{error:?}");

    let port = common::free_port();
    let down = client(&format!("http://127.0.0.1:{port}/v1"), 5);
    let err = down.chat_stream("llama3.1:8b", &ask("x"), None).await.err().unwrap();
    assert!(matches!(err, LlmError::Unreachable { .. }) && err.is_transient(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test]
async fn max_tokens_falls_back_to_max_completion_tokens() {
    let fake = FakeLlm::start().await;
    let c = client(&fake.url, 10);
    let mut stream = c.chat_stream("llama3.1:8b", &ask("x"), Some(64)).await.unwrap();
    while stream.next().await.is_some() {}
    let mut stream = c.chat_stream("o-new", &ask("x"), Some(64)).await.unwrap();
    let mut text = String::new();
    while let Some(Ok(d)) = stream.next().await {
        if let Delta::Text(t) = d {
            text.push_str(&t);
        }
    }
    assert_eq!(text, "You said: x");
    let requests = fake.requests();
    assert_eq!(requests[0]["max_tokens"], 64);
    assert_eq!(requests[1]["max_tokens"], 64, "first try with max_tokens");
    assert_eq!(requests[2]["max_completion_tokens"], 64);
    assert!(requests[2].get("max_tokens").is_none());
}

#[tokio::test]
async fn lists_the_servers_models() {
    let fake = FakeLlm::start().await;
    // Every model of the server's `/v1/models` list, in its order, and nothing else.
    let models = client(&fake.url, 10).models().await.unwrap();
    assert_eq!(models, common::fake_llm::MODELS);
}
