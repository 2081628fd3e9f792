//! Probes of every backend, shared by `check` (the operator's terminal) and `!status` (a room):
//! all run at once, each under a short timeout, and each gives `up`, `down` or `off` (not
//! configured: shown, never left out) with its latency and two details — one for a room, which
//! never names an address or a credential, and one for the operator, which may show URLs.

use crate::browser::Browser;
use crate::config::{CodingAgent, Config};
use crate::llm::LlmClient;
use crate::matrix::MatrixClient;
use crate::planka::PlankaClient;
use crate::rag::Rag;
use crate::secret::Secret;
use crate::store::Store;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one probe may take; a backend slower than this is down as far as anyone can tell.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The browser's probe may have to launch Chromium first.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(15);
/// Probes whose failure makes `check` exit 1 (the agent cannot work without them).
pub const REQUIRED: [&str; 2] = ["homeserver", "database"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    /// Not configured.
    Off,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Off => "off",
        }
    }
}

/// One probe's result.
#[derive(Debug, Clone)]
pub struct Report {
    /// `homeserver`, `database`, `llm`, `embedder`, `chroma`, `planka`, `browser`, `agent:<name>`.
    pub name: String,
    pub state: State,
    pub latency: Duration,
    /// For a room: never an address or a credential.
    pub detail: String,
    /// For the operator (a terminal, or an admin asking): may name URLs, never a credential.
    pub operator_detail: String,
}

impl Report {
    /// `<name> <up|down|off> <N> ms <detail>`, the operator's detail when `operator`.
    pub fn line(&self, operator: bool) -> String {
        let detail = if operator { &self.operator_detail } else { &self.detail };
        format!("{} {} {} ms {}", self.name, self.state.as_str(), self.latency.as_millis(), detail)
    }

    pub fn is_required(&self) -> bool {
        REQUIRED.contains(&self.name.as_str())
    }
}

/// Whether every required probe is up (`check`'s exit code).
pub fn required_up(reports: &[Report]) -> bool {
    reports.iter().all(|r| !r.is_required() || r.state == State::Up)
}

/// The database: the open pool of the running agent, or its URL for `check` to connect to.
pub enum Database<'a> {
    Open(&'a Store),
    Url(&'a Secret),
}

/// The clients to probe, as the running agent (or `check`) built them from the config.
pub struct Targets<'a> {
    pub config: &'a Config,
    pub matrix: &'a MatrixClient,
    pub database: Database<'a>,
    pub llm: &'a LlmClient,
    pub rag: &'a Rag,
    pub planka: Option<&'a PlankaClient>,
    pub browser: &'a Browser,
}

/// What one probe found, before it is timed.
struct Outcome {
    state: State,
    detail: String,
    operator: String,
}

impl Outcome {
    fn up(detail: impl Into<String>, operator: impl Into<String>) -> Self {
        Self { state: State::Up, detail: detail.into(), operator: operator.into() }
    }

    fn down(detail: impl Into<String>, operator: impl Into<String>) -> Self {
        Self { state: State::Down, detail: detail.into(), operator: operator.into() }
    }

    fn off(detail: &str) -> Self {
        Self { state: State::Off, detail: detail.to_owned(), operator: detail.to_owned() }
    }
}

/// Every probe, at once; the fixed ones first, then one per coding agent in name order.
pub async fn run(t: &Targets<'_>) -> Vec<Report> {
    let (homeserver, database, llm, embedder, chroma, planka, browser) = tokio::join!(
        timed("homeserver", TIMEOUT, homeserver(t)),
        timed("database", TIMEOUT, database(&t.database)),
        timed("llm", TIMEOUT, llm(t)),
        timed("embedder", TIMEOUT, embedder(t)),
        timed("chroma", TIMEOUT, chroma(t)),
        timed("planka", TIMEOUT, planka(t.planka)),
        timed("browser", BROWSER_TIMEOUT, browser(t)),
    );
    let agents = futures_util::future::join_all(
        t.config.agents.iter().map(|(name, agent)| timed(format!("agent:{name}"), TIMEOUT, coding_agent(agent))),
    )
    .await;
    let mut reports = vec![homeserver, database, llm, embedder, chroma, planka, browser];
    reports.extend(agents);
    reports
}

async fn timed(name: impl Into<String>, limit: Duration, probe: impl Future<Output = Outcome>) -> Report {
    let start = Instant::now();
    let outcome = tokio::time::timeout(limit, probe).await.unwrap_or_else(|_| {
        let words = format!("no answer within {} s", limit.as_secs());
        Outcome::down(words.clone(), words)
    });
    let latency = if outcome.state == State::Off { Duration::ZERO } else { start.elapsed() };
    Report {
        name: name.into(),
        state: outcome.state,
        latency,
        detail: outcome.detail,
        operator_detail: outcome.operator,
    }
}

/// Reachable (`versions`, no token) and the registration loaded (the as_token is known).
async fn homeserver(t: &Targets<'_>) -> Outcome {
    let versions = match t.matrix.probe().await {
        Ok(v) => v,
        Err(e) => return Outcome::down(e.public(), e.to_string()),
    };
    let newest = versions.last().map_or("?", String::as_str);
    match t.matrix.whoami().await {
        Ok(user) => Outcome::up(
            format!("Matrix {newest}; registration loaded"),
            format!("{} speaks Matrix up to {newest}; as_token accepted, acting as {user}", t.matrix.base_url()),
        ),
        Err(e) => {
            let hint = match e.errcode() {
                Some("M_UNKNOWN_TOKEN" | "M_FORBIDDEN") => {
                    " — is the registration listed in the homeserver's app_service_config_files (then restart it)?"
                }
                _ => "",
            };
            Outcome::down(format!("the registration is not loaded: {}", e.public()), format!("{e}{hint}"))
        }
    }
}

async fn database(database: &Database<'_>) -> Outcome {
    let down = |e: crate::store::StoreError| Outcome::down("the database does not answer", e.to_string());
    match database {
        Database::Open(store) => match store.ping().await {
            Ok(()) => Outcome::up(store.kind().to_string(), store.kind().to_string()),
            Err(e) => down(e),
        },
        Database::Url(url) => match Store::connect(url.expose()).await {
            Ok(store) => {
                let result = store.ping().await;
                store.close().await;
                match result {
                    Ok(()) => Outcome::up(
                        format!("{}, migrations applied", store.kind()),
                        format!("{}, migrations applied", store.kind()),
                    ),
                    Err(e) => down(e),
                }
            }
            Err(e) => down(e),
        },
    }
}

/// The model server answers and has the chat model.
async fn llm(t: &Targets<'_>) -> Outcome {
    let model = t.config.llm.chat_model.trim();
    if model.is_empty() {
        return Outcome::off("no chat model configured (llm.chat_model)");
    }
    match t.llm.models().await {
        Ok(models) if models.iter().any(|m| m == model) => {
            Outcome::up(format!("model {model} available"), format!("{} has model {model}", t.llm.base_url()))
        }
        Ok(models) => Outcome::down(
            format!("the model {model} is not on the model server"),
            format!("{} has no model {model} (it has {})", t.llm.base_url(), models.join(", ")),
        ),
        Err(e) => Outcome::down(e.public(), e.to_string()),
    }
}

/// One embedding, and its dimension.
async fn embedder(t: &Targets<'_>) -> Outcome {
    if t.rag.model.trim().is_empty() {
        return Outcome::off("no embedding model configured (llm.embedding_model)");
    }
    match t.rag.embed_documents(&["conclave-agent probe"]).await {
        Ok(vectors) => {
            let dimension = vectors.first().map_or(0, Vec::len);
            if dimension == 0 {
                return Outcome::down("the embedder returned no vector", "the embedder returned no vector");
            }
            let words = format!("{}, dimension {dimension}", t.rag.model);
            Outcome::up(words.clone(), format!("{}: {words}", t.rag.embedder.base_url()))
        }
        Err(e) => Outcome::down(e.public(), e.to_string()),
    }
}

/// Heartbeat, then the collection (created if missing) with its distance.
async fn chroma(t: &Targets<'_>) -> Outcome {
    if t.config.chroma.url.trim().is_empty() {
        return Outcome::off("not configured (chroma.url)");
    }
    let chroma = &t.rag.chroma;
    let result = async {
        chroma.heartbeat().await?;
        chroma.ensure_collection().await
    }
    .await;
    match result {
        Ok(_) => {
            let words = format!("collection {} (cosine distance)", chroma.collection_name());
            Outcome::up(words.clone(), format!("{}: {words}", t.config.chroma.url))
        }
        Err(e) => Outcome::down(e.public(), e.to_string()),
    }
}

/// The API key (or the password) is accepted.
async fn planka(client: Option<&PlankaClient>) -> Outcome {
    let Some(client) = client else {
        return Outcome::off("not configured (planka.api_key, or planka.username and planka.password)");
    };
    match client.me().await {
        Ok(user) => {
            let who = user.username.unwrap_or(user.id);
            Outcome::up(format!("signed in as {who}"), format!("{}: signed in as {who}", client.base_url()))
        }
        Err(e) => Outcome::down(e.public(), e.to_string()),
    }
}

/// A blank page in a fresh browser context, closed again.
async fn browser(t: &Targets<'_>) -> Outcome {
    let b = &t.config.browser;
    if b.cdp_url.trim().is_empty() && b.chromium_path.trim().is_empty() {
        return Outcome::off("not configured (browser.cdp_url or browser.chromium_path)");
    }
    match t.browser.probe().await {
        Ok(product) => Outcome::up("a blank page opened and closed", product),
        Err(e) => Outcome::down("the browser is unavailable", e.to_string()),
    }
}

/// The agent's command exists and is executable (it is started by `!agent`, not now).
async fn coding_agent(agent: &CodingAgent) -> Outcome {
    let Some(program) = agent.command.first().filter(|p| !p.trim().is_empty()) else {
        return Outcome::off("no command configured");
    };
    match find_program(program, std::env::var_os("PATH").as_deref()) {
        Some(path) => Outcome::up(format!("{program} found"), format!("{program} is {}", path.display())),
        None => {
            let words = format!("{program} is not an executable on PATH");
            Outcome::down(words.clone(), words)
        }
    }
}

/// Where `program` is: itself when it holds a `/`, else the first executable of that name on `path`.
fn find_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?).map(|dir| dir.join(program)).find(|p| executable(p))
}

/// The last reports, reused for a while so a room full of people asking does not hammer the
/// backends. Askers who come while a run is under way wait for that run instead of starting one.
pub struct Cache {
    ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Report>>)>>,
}

impl Cache {
    /// How long `!status` reuses reports.
    pub const TTL: Duration = Duration::from_secs(10);

    pub fn new(ttl: Duration) -> Self {
        Self { ttl, last: tokio::sync::Mutex::default() }
    }

    pub async fn get_or_run(&self, run: impl Future<Output = Vec<Report>>) -> Arc<Vec<Report>> {
        let mut last = self.last.lock().await;
        if let Some((at, reports)) = last.as_ref()
            && at.elapsed() < self.ttl
        {
            return reports.clone();
        }
        let reports = Arc::new(run.await);
        *last = Some((Instant::now(), reports.clone()));
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, state: State) -> Report {
        Report {
            name: name.into(),
            state,
            latency: Duration::from_millis(12),
            detail: "room words".into(),
            operator_detail: "http://10.0.0.1:8008 words".into(),
        }
    }

    #[test]
    fn a_line_is_name_state_latency_detail() {
        let r = report("chroma", State::Down);
        assert_eq!(r.line(false), "chroma down 12 ms room words");
        assert_eq!(r.line(true), "chroma down 12 ms http://10.0.0.1:8008 words");
    }

    #[test]
    fn only_homeserver_and_database_are_required() {
        let cases = [
            ("all up", vec![("homeserver", State::Up), ("database", State::Up), ("llm", State::Down)], true),
            ("homeserver down", vec![("homeserver", State::Down), ("database", State::Up)], false),
            ("database down", vec![("homeserver", State::Up), ("database", State::Down)], false),
            ("optional off", vec![("homeserver", State::Up), ("database", State::Up), ("planka", State::Off)], true),
        ];
        for (name, states, want) in cases {
            let reports: Vec<Report> = states.into_iter().map(|(n, s)| report(n, s)).collect();
            assert_eq!(required_up(&reports), want, "{name}");
        }
    }

    #[test]
    fn programs_are_found_on_path_or_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_program("tool", Some(&path)), Some(exe.clone()));
        assert_eq!(find_program("plain", Some(&path)), None, "not executable");
        assert_eq!(find_program("missing", Some(&path)), None);
        assert_eq!(find_program(exe.to_str().unwrap(), None), Some(exe));
    }

    #[tokio::test]
    async fn the_cache_reuses_reports_for_its_ttl() {
        let ttl = Duration::from_millis(200);
        let cache = Cache::new(ttl);
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let run = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            vec![report("llm", State::Up)]
        };
        cache.get_or_run(run()).await;
        cache.get_or_run(run()).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1, "reused within the ttl");
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        cache.get_or_run(run()).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2, "run again after it");
    }
}
