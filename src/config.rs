//! Typed configuration: a TOML file, then `CONCLAVE_<SECTION>__<KEY>` environment overrides,
//! validated once at start. Every error names the key and the variable that overrides it.

use crate::secret::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "CONCLAVE_";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "CONCLAVE_CONFIG";
/// Config file used when neither `--config` nor `$CONCLAVE_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "./conclave.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: Homeserver,
    pub appservice: Appservice,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub dispatch: Dispatch,
    #[serde(default)]
    pub jobs: Jobs,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub llm: Llm,
    #[serde(default)]
    pub planka: Planka,
    #[serde(default)]
    pub chroma: Chroma,
    #[serde(default)]
    pub browser: Browser,
    /// `[agents.<name>]`: the coding agents, each with its ghost user `@<ghost_prefix><name>`. Only
    /// these ghosts exist. Default none.
    #[serde(default)]
    pub agents: BTreeMap<String, CodingAgent>,
    /// `[agent_api]`: limits of the coding agents' HTTP API (`/conclave/v1`).
    #[serde(default)]
    pub agent_api: AgentApi,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: Metrics,
    /// `[logging]`: how log lines look.
    #[serde(default)]
    pub logging: Logging,
    /// The directory of the config file: `prompts/` there overrides the built-in prompts.
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Homeserver {
    /// Client-server API base URL. Default `http://127.0.0.1:8008`.
    #[serde(default = "default_homeserver_url")]
    pub url: String,
    /// The homeserver's name, the part after `:` in user ids. Required.
    pub server_name: String,
    /// Timeout of one client-server request, in seconds. Default 30.
    #[serde(default = "default_request_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Appservice {
    /// Registration id. Default `conclave-agent`.
    #[serde(default = "default_appservice_id")]
    pub id: String,
    /// Where Synapse's transactions arrive. Default `127.0.0.1:9009`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// What the registration tells Synapse to call. Default `http://127.0.0.1:9009`.
    #[serde(default = "default_appservice_url")]
    pub url: String,
    /// Token the agent presents to the homeserver. Required.
    pub as_token: Secret,
    /// Token the homeserver presents to the agent. Required, different from `as_token`.
    pub hs_token: Secret,
    /// Localpart of the agent user. Default `agent`.
    #[serde(default = "default_sender_localpart")]
    pub sender_localpart: String,
    /// Localpart prefix of the ghost users (`@agent-pi`). Default `agent-`.
    #[serde(default = "default_ghost_prefix")]
    pub ghost_prefix: String,
    /// Room aliases `#<alias_prefix>…:<server>` belong to the agent (an exclusive namespace in the
    /// registration): `bootstrap` creates them, and nobody else can take one first. Empty = none.
    /// Default `fleet-`.
    #[serde(default = "default_alias_prefix")]
    pub alias_prefix: String,
    /// Display name of the agent user. Default `Agent`.
    #[serde(default = "default_display_name")]
    pub display_name: String,
    /// Largest transaction body accepted, in bytes. Default 32 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds a client has to send a request's headers (also how long a kept-alive connection may
    /// sit idle), and again its body; a slower one is disconnected. Default 30.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Connections open at once on the port (the homeserver's and the coding agents'); a new one
    /// beyond it is closed at once. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `sqlite://path` (created if missing) or `postgres://user:pw@host/db`.
    /// Default `sqlite://./data/conclave-agent.db`.
    pub url: Secret,
}

impl Default for Database {
    fn default() -> Self {
        Self { url: Secret::new("sqlite://./data/conclave-agent.db") }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Glob patterns (`*`, `?`) of users who may invite and command the agent.
    /// Default: everyone on this homeserver (`@*:<server_name>`).
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Glob patterns of users who may run admin commands. Default none.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Commands one person may give per minute (questions have `llm.user_requests_per_minute`);
    /// beyond it they get one notice a minute and no answers. 0 = no limit. Default 60.
    #[serde(default = "default_commands_per_minute")]
    pub commands_per_minute: u32,
}

fn default_commands_per_minute() -> u32 {
    60
}

impl Default for Access {
    fn default() -> Self {
        Self { users: None, admins: Vec::new(), commands_per_minute: default_commands_per_minute() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    /// Rooms processed at once (events within one room are always processed in order). Default 8.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Attempts at one event before it is set aside as a dead letter (failed attempts back off
    /// exponentially up to 5 minutes, so the default covers about an hour of homeserver outage). Default 20.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

impl Default for Dispatch {
    fn default() -> Self {
        Self { concurrency: default_concurrency(), max_attempts: default_max_attempts() }
    }
}

/// `[retention]`: how long the agent's own bookkeeping is kept, in days (pruned hourly). Room
/// history and the search index are not bookkeeping: they live as long as the rooms.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Finished jobs. Default 7.
    pub jobs_days: u64,
    /// Events set aside after failing too often (with their full JSON). Default 30.
    pub dead_letters_days: u64,
    /// The index's notes: redacted ids, given-up messages, which edit replaced what. Default 90.
    pub index_notes_days: u64,
    /// The agent's messages about cards (so a reply to one can leave the card out). Default 180.
    pub task_messages_days: u64,
    /// Token use per day (`!usage` looks back 30 days). Default 400.
    pub usage_days: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { jobs_days: 7, dead_letters_days: 30, index_notes_days: 90, task_messages_days: 180, usage_days: 400 }
    }
}

impl Retention {
    /// `days` before now, in Unix ms.
    pub fn cutoff_ms(days: u64) -> i64 {
        let span = i64::try_from(days).unwrap_or(i64::MAX / 2).saturating_mul(86_400_000);
        crate::store::now_ms().saturating_sub(span)
    }
}

/// `[jobs]`: slow work (answers, Planka, search, browsing …) waits in a durable queue, off the rooms'
/// lanes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// Jobs queued or running in one room; beyond it a request is refused with a clear reply. Default 20.
    pub max_queued_per_room: usize,
    /// Jobs queued or running for one person, across rooms. Default 5.
    pub max_queued_per_user: usize,
    /// Quick backend jobs (Planka, search, model list) run at once. Default 4.
    pub max_running_backend: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        Self { max_queued_per_room: 20, max_queued_per_user: 5, max_running_backend: 4 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Llm {
    pub base_url: String,
    pub api_key: Secret,
    pub chat_model: String,
    pub embedding_base_url: String,
    pub embedding_model: String,
    /// Put before a search query before it is embedded (`search_query: ` for nomic, `query: ` for
    /// e5 servers that do not add it themselves). Default empty.
    pub embedding_query_prefix: String,
    /// Put before a stored message before it is embedded (`search_document: `, `passage: `).
    /// Default empty.
    pub embedding_document_prefix: String,
    /// Deadline of one answer, in seconds. Default 120.
    pub timeout_secs: u64,
    /// A streamed answer is edited at most this often, in milliseconds. Default 1000.
    pub edit_interval_ms: u64,
    /// Token budget of the conversation sent with a question (estimated). Default 3000.
    pub context_tokens: usize,
    /// Longest answer, in tokens; 0 leaves it to the server. Default 0.
    pub max_tokens: u32,
    /// Answers generated at once; more wait as queued jobs (with a "queued" notice). Default 2.
    pub max_concurrent: usize,
    /// Questions one user may ask per minute; 0 = no limit. Default 10.
    pub user_requests_per_minute: u32,
    /// A second server used while the primary fails. Default none.
    pub fallback: Option<LlmFallback>,
}

/// `[llm.fallback]`: used when the primary fails, until a cooldown has passed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFallback {
    pub base_url: String,
    #[serde(default)]
    pub api_key: Secret,
    pub chat_model: String,
    /// Seconds before the primary is tried again after it failed. Default 60.
    #[serde(default = "default_fallback_cooldown")]
    pub cooldown_secs: u64,
}

fn default_fallback_cooldown() -> u64 {
    60
}

impl Default for Llm {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:11434/v1".into(),
            api_key: Secret::default(),
            chat_model: "llama3.1:8b".into(),
            embedding_base_url: String::new(),
            embedding_model: "nomic-embed-text".into(),
            embedding_query_prefix: String::new(),
            embedding_document_prefix: String::new(),
            timeout_secs: 120,
            edit_interval_ms: 1000,
            context_tokens: 3000,
            max_tokens: 0,
            max_concurrent: 2,
            user_requests_per_minute: 10,
            fallback: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Planka {
    pub url: String,
    pub public_url: String,
    pub api_key: Secret,
    pub username: String,
    pub password: Secret,
    pub webhook_token: Secret,
    /// Timeout of one Planka request, in seconds. Default 15.
    pub timeout_secs: u64,
}

impl Default for Planka {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:1337".into(),
            public_url: String::new(),
            api_key: Secret::default(),
            username: String::new(),
            password: Secret::default(),
            webhook_token: Secret::default(),
            timeout_secs: 15,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chroma {
    pub url: String,
    pub tenant: String,
    pub database: String,
    pub collection: String,
    pub token: Secret,
    /// Whether rooms are indexed until an admin says `!index off`. Default true.
    pub index_by_default: bool,
    /// Whether joining a room reads its earlier history into the index. Default true.
    pub backfill_on_join: bool,
    /// Events of history read at most per backfill (newest first). Default 10,000.
    pub backfill_limit: u64,
}

impl Default for Chroma {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000".into(),
            tenant: "default_tenant".into(),
            database: "default_database".into(),
            collection: "conclave_messages".into(),
            token: Secret::default(),
            index_by_default: true,
            backfill_on_join: true,
            backfill_limit: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Browser {
    /// DevTools endpoint of an existing Chromium (N.eko's: `http://127.0.0.1:9222`, or its
    /// `ws://…/devtools/browser/…` URL); empty = launch `chromium_path` headless. Default empty.
    pub cdp_url: String,
    /// The Chromium to launch when `cdp_url` is empty. Default `/usr/bin/chromium`.
    pub chromium_path: String,
    /// Exact hosts (name or IP, optional `:port`) exempt from the private-address block. Default none.
    pub allow_hosts: Vec<String>,
    /// Pages open at once; more browses wait. Default 2.
    pub max_tabs: usize,
    /// Deadline of one page load, in seconds. Default 30.
    pub page_timeout_secs: u64,
    /// All bytes one page may load (document, subresources, sockets). Default 20 MiB.
    pub max_page_bytes: u64,
}

impl Default for Browser {
    fn default() -> Self {
        Self {
            cdp_url: String::new(),
            chromium_path: "/usr/bin/chromium".into(),
            allow_hosts: Vec::new(),
            max_tabs: 2,
            page_timeout_secs: 30,
            max_page_bytes: 20 * 1024 * 1024,
        }
    }
}

/// Where coding agents work unless their table says otherwise.
pub const DEFAULT_AGENT_WORKDIR: &str = "/workspace/data/coding/projects";

/// `[agents.<name>]`: one coding agent. Every key is optional; after loading, the empty ones hold
/// their defaults (so `init` writes them out).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodingAgent {
    /// The ghost's display name. Default: the agent's name.
    pub display_name: String,
    /// The ghost's avatar: an `mxc://` URI, or an image file (relative to the config file's
    /// directory) uploaded at start. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// How `!agent <name>` starts it. Default: pi's RPC mode for `pi`, Claude Code's stream-json
    /// mode for `claude`, else the name alone.
    pub command: Vec<String>,
    /// Where it works. Default `/workspace/data/coding/projects`.
    pub workdir: String,
    /// Rooms its token may use and its ghost may be invited to: room ids or aliases, as globs
    /// (`*`, `?`; an alias glob matches the room's canonical and alternative aliases). Default `["*"]`.
    pub rooms: Vec<String>,
}

impl CodingAgent {
    /// The defaults of `name`'s empty keys.
    fn fill_defaults(&mut self, name: &str) {
        if self.display_name.trim().is_empty() {
            self.display_name = name.to_owned();
        }
        if self.command.is_empty() {
            let words: &[&str] = match name {
                "pi" => &["pi", "--mode", "rpc"],
                "claude" => {
                    &["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
                }
                other => &[other],
            };
            self.command = words.iter().map(|w| (*w).to_owned()).collect();
        }
        if self.workdir.trim().is_empty() {
            self.workdir = DEFAULT_AGENT_WORKDIR.to_owned();
        }
        if self.rooms.is_empty() {
            self.rooms = vec!["*".to_owned()];
        }
    }
}

/// `[agent_api]`: what one coding agent's token may ask of the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentApi {
    /// Requests per second one token may make, on average. Default 20.
    pub requests_per_second: u32,
    /// Requests one token may make in a burst above that rate. Default 100.
    pub burst: u32,
    /// Largest JSON request body, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Largest file (`POST /conclave/v1/files`), in bytes. Default 10 MiB.
    pub max_upload_bytes: usize,
    /// Inbox messages kept per agent; beyond it the oldest are dropped (and counted). Default 1000.
    pub inbox_max: u64,
}

impl Default for AgentApi {
    fn default() -> Self {
        Self {
            requests_per_second: 20,
            burst: 100,
            max_body_bytes: 1024 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            inbox_max: 1000,
        }
    }
}

/// `[metrics]`: Prometheus text at `GET /metrics`, on a listener of its own so the appservice
/// port never exposes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Address of the metrics listener, e.g. `127.0.0.1:9109`. Default empty: no metrics at all
    /// (nothing is recorded).
    pub listen: String,
}

impl Metrics {
    /// The listener's address; `None` when metrics are off.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::key("metrics.listen", format!("not an address like 127.0.0.1:9109: {listen:?}")))
    }
}

/// `[logging]`: the format of log lines (on stderr).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// `human` (default: one readable line per record) or `json` (one JSON object per line, for
    /// log collectors).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

// `#[serde(default)]` on a whole section cannot coexist with required keys, so the
// sections with required keys name each default here.
fn default_homeserver_url() -> String {
    "http://127.0.0.1:8008".into()
}
fn default_request_timeout() -> u64 {
    30
}
fn default_appservice_id() -> String {
    "conclave-agent".into()
}
fn default_listen() -> String {
    "127.0.0.1:9009".into()
}
fn default_appservice_url() -> String {
    "http://127.0.0.1:9009".into()
}
fn default_sender_localpart() -> String {
    "agent".into()
}
fn default_ghost_prefix() -> String {
    "agent-".into()
}
fn default_alias_prefix() -> String {
    "fleet-".into()
}
fn default_display_name() -> String {
    "Agent".into()
}
fn default_read_timeout_secs() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_body_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_concurrency() -> usize {
    8
}
fn default_max_attempts() -> u32 {
    20
}

/// A configuration problem, always tied to the key that causes it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found (create one with `conclave-agent init`)")]
    NotFound { path: PathBuf },
    #[error("config key `{key}` (env {env}): {reason}")]
    Key { key: String, env: String, reason: String },
    #[error("config: {0}")]
    Other(String),
}

impl ConfigError {
    fn key(key: &str, reason: impl Into<String>) -> Self {
        Self::Key { key: key.to_owned(), env: env_var_for(key), reason: reason.into() }
    }

    fn from_figment(err: figment::Error) -> Self {
        // Report the first problem. figment's path names the key, except for a missing field,
        // whose name is only in the kind.
        let err = err.into_iter().next().expect("figment errors are never empty");
        let mut path = err.path.clone();
        if let figment::error::Kind::MissingField(f) = &err.kind {
            path.push(f.to_string());
        }
        if path.is_empty() {
            return Self::Other(err.to_string());
        }
        Self::key(&path.join("."), err.kind.to_string())
    }
}

/// The localpart grammar for new user ids (the spec's `[a-z0-9._=\-/+]+`); ruma also accepts
/// historical ids, which we must never create.
pub fn is_conforming_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
}

/// `appservice.as_token` → `CONCLAVE_APPSERVICE__AS_TOKEN`.
pub fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// The config path to use: `--config`, then `$CONCLAVE_CONFIG`, then `./conclave.toml`.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

impl Config {
    /// Reads `path`, applies environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::NotFound { path: path.to_owned() });
        }
        let mut config = Self::from_figment(Figment::new().merge(Toml::file_exact(path)))?;
        config.dir = path.parent().map(Path::to_owned);
        Ok(config)
    }

    /// Parses TOML text (with environment overrides): for `init` and for tests.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(base: Figment) -> Result<Self, ConfigError> {
        // Only `SECTION__KEY` names: CONCLAVE_CONFIG and the tools' own CONCLAVE_* variables are
        // not config keys.
        let env = Env::prefixed(ENV_PREFIX).filter(|k| k.as_str().contains("__")).split("__");
        let mut config: Config = base.merge(env).extract().map_err(ConfigError::from_figment)?;
        for (name, agent) in &mut config.agents {
            agent.fill_defaults(name);
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        http_url("homeserver.url", &self.homeserver.url)?;
        self.server_name()?;
        positive("homeserver.timeout_secs", self.homeserver.timeout_secs)?;
        let a = &self.appservice;
        non_empty("appservice.id", &a.id)?;
        self.listen_addr()?;
        http_url("appservice.url", &a.url)?;
        non_empty("appservice.as_token", a.as_token.expose())?;
        non_empty("appservice.hs_token", a.hs_token.expose())?;
        if a.as_token == a.hs_token {
            return Err(ConfigError::key("appservice.hs_token", "must differ from appservice.as_token"));
        }
        self.sender_user_id()?;
        non_empty("appservice.ghost_prefix", &a.ghost_prefix)?;
        if !is_conforming_localpart(&a.ghost_prefix) {
            return Err(ConfigError::key(
                "appservice.ghost_prefix",
                "use only a-z, 0-9 and . _ = - / + (Matrix user id grammar)",
            ));
        }
        if !a.alias_prefix.is_empty() && !is_conforming_localpart(&a.alias_prefix) {
            return Err(ConfigError::key(
                "appservice.alias_prefix",
                "use only a-z, 0-9 and . _ = - / + (room alias grammar), or leave it empty",
            ));
        }
        if a.max_body_bytes < 1024 {
            return Err(ConfigError::key("appservice.max_body_bytes", "must be at least 1024"));
        }
        if a.read_timeout_secs == 0 {
            return Err(ConfigError::key("appservice.read_timeout_secs", "must be at least 1"));
        }
        if a.max_connections == 0 {
            return Err(ConfigError::key("appservice.max_connections", "must be at least 1"));
        }
        crate::store::DbKind::from_url(self.database.url.expose())
            .map_err(|reason| ConfigError::key("database.url", reason))?;
        for (i, p) in self.access_users().iter().enumerate() {
            crate::access::Pattern::parse(p).map_err(|r| ConfigError::key(&format!("access.users[{i}]"), r))?;
        }
        for (i, p) in self.access.admins.iter().enumerate() {
            crate::access::Pattern::parse(p).map_err(|r| ConfigError::key(&format!("access.admins[{i}]"), r))?;
        }
        positive("dispatch.concurrency", self.dispatch.concurrency as u64)?;
        positive("dispatch.max_attempts", u64::from(self.dispatch.max_attempts))?;
        http_url("llm.base_url", &self.llm.base_url)?;
        optional_http_url("llm.embedding_base_url", &self.llm.embedding_base_url)?;
        positive("llm.timeout_secs", self.llm.timeout_secs)?;
        positive("llm.context_tokens", self.llm.context_tokens as u64)?;
        positive("llm.max_concurrent", self.llm.max_concurrent as u64)?;
        positive("jobs.max_queued_per_room", self.jobs.max_queued_per_room as u64)?;
        positive("jobs.max_queued_per_user", self.jobs.max_queued_per_user as u64)?;
        positive("jobs.max_running_backend", self.jobs.max_running_backend as u64)?;
        if let Some(f) = &self.llm.fallback {
            http_url("llm.fallback.base_url", &f.base_url)?;
            non_empty("llm.fallback.chat_model", &f.chat_model)?;
        }
        http_url("planka.url", &self.planka.url)?;
        positive("planka.timeout_secs", self.planka.timeout_secs)?;
        optional_http_url("planka.public_url", &self.planka.public_url)?;
        http_url("chroma.url", &self.chroma.url)?;
        positive("chroma.backfill_limit", self.chroma.backfill_limit)?;
        let b = &self.browser;
        if !b.cdp_url.is_empty() {
            let url = url::Url::parse(&b.cdp_url)
                .map_err(|e| ConfigError::key("browser.cdp_url", format!("not a URL ({e}): {:?}", b.cdp_url)))?;
            if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
                return Err(ConfigError::key("browser.cdp_url", "must be an http:// or ws:// DevTools URL (or empty)"));
            }
        } else {
            non_empty("browser.chromium_path", &b.chromium_path)?;
        }
        for (i, h) in b.allow_hosts.iter().enumerate() {
            h.parse::<crate::guard::AllowHost>()
                .map_err(|r| ConfigError::key(&format!("browser.allow_hosts[{i}]"), r))?;
        }
        self.metrics.listen_addr()?;
        positive("browser.max_tabs", b.max_tabs as u64)?;
        positive("browser.page_timeout_secs", b.page_timeout_secs)?;
        if b.max_page_bytes < 64 * 1024 {
            return Err(ConfigError::key("browser.max_page_bytes", "must be at least 65536"));
        }
        for (name, agent) in &self.agents {
            let key = |k: &str| format!("agents.{name}.{k}");
            if !is_conforming_localpart(&format!("{}{name}", a.ghost_prefix)) {
                return Err(ConfigError::key(
                    &format!("agents.{name}"),
                    "the name must use only a-z, 0-9 and . _ = - / + (it becomes the ghost's user id)",
                ));
            }
            if agent.command.iter().any(|w| w.is_empty()) {
                return Err(ConfigError::key(&key("command"), "must not hold empty words"));
            }
            for (i, glob) in agent.rooms.iter().enumerate() {
                if !(glob.starts_with(['!', '#']) || glob == "*") {
                    return Err(ConfigError::key(
                        &format!("{}[{i}]", key("rooms")),
                        format!(
                            "{glob:?} is not a room pattern: use \"*\", a room id (!…) or an alias (#…), globs allowed"
                        ),
                    ));
                }
            }
        }
        let api = &self.agent_api;
        positive("agent_api.requests_per_second", u64::from(api.requests_per_second))?;
        positive("agent_api.burst", u64::from(api.burst))?;
        if api.max_body_bytes < 1024 {
            return Err(ConfigError::key("agent_api.max_body_bytes", "must be at least 1024"));
        }
        positive("agent_api.max_upload_bytes", api.max_upload_bytes as u64)?;
        positive("agent_api.inbox_max", api.inbox_max)?;
        Ok(())
    }

    pub fn server_name(&self) -> Result<OwnedServerName, ConfigError> {
        OwnedServerName::try_from(self.homeserver.server_name.as_str())
            .map_err(|e| ConfigError::key("homeserver.server_name", format!("not a valid server name: {e}")))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.appservice
            .listen
            .parse()
            .map_err(|e| ConfigError::key("appservice.listen", format!("not an address like 127.0.0.1:9009: {e}")))
    }

    pub fn sender_user_id(&self) -> Result<OwnedUserId, ConfigError> {
        if !is_conforming_localpart(&self.appservice.sender_localpart) {
            return Err(ConfigError::key(
                "appservice.sender_localpart",
                "use only a-z, 0-9 and . _ = - / + (Matrix user id grammar)",
            ));
        }
        UserId::parse_with_server_name(self.appservice.sender_localpart.as_str(), &self.server_name()?)
            .map_err(|e| ConfigError::key("appservice.sender_localpart", format!("not a valid localpart: {e}")))
    }

    /// `access.users`, defaulting to everyone on this homeserver.
    pub fn access_users(&self) -> Vec<String> {
        self.access.users.clone().unwrap_or_else(|| vec![format!("@*:{}", self.homeserver.server_name)])
    }

    /// TOML text of this config, for `init`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config shape always serializes to TOML")
    }
}

fn non_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::key(key, "must not be empty"));
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::key(key, "must be greater than 0"));
    }
    Ok(())
}

fn http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(value).map_err(|e| ConfigError::key(key, format!("not a URL ({e}): {value:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::key(key, format!("must be an http:// or https:// URL, got {value:?}")));
    }
    Ok(())
}

fn optional_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() { Ok(()) } else { http_url(key, value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
        [homeserver]
        server_name = "conclave.local"
        [appservice]
        as_token = "as-secret-1"
        hs_token = "hs-secret-2"
    "#;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Key { key, env, .. } => {
                assert_eq!(env, env_var_for(&key));
                key
            }
            other => panic!("expected a key error, got {other}"),
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.homeserver.url, "http://127.0.0.1:8008");
        assert_eq!(c.appservice.listen, "127.0.0.1:9009");
        assert_eq!(c.appservice.sender_localpart, "agent");
        assert_eq!(c.appservice.ghost_prefix, "agent-");
        assert_eq!(c.appservice.alias_prefix, "fleet-");
        assert_eq!(c.database.url.expose(), "sqlite://./data/conclave-agent.db");
        assert_eq!(c.access_users(), vec!["@*:conclave.local".to_string()]);
        assert_eq!(c.chroma.collection, "conclave_messages");
        assert_eq!(c.browser.cdp_url, "", "empty = launch chromium_path");
        assert_eq!((c.browser.max_tabs, c.browser.page_timeout_secs, c.browser.max_page_bytes), (2, 30, 20_971_520));
        assert_eq!(c.sender_user_id().unwrap().as_str(), "@agent:conclave.local");
        assert_eq!(c.metrics.listen_addr().unwrap(), None, "metrics are off by default");
        assert_eq!(c.logging.format, LogFormat::Human);
    }

    #[test]
    fn metrics_and_logging_sections_parse() {
        let c = Config::from_toml(&format!(
            "{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9109\"\n[logging]\nformat = \"json\"\n"
        ))
        .unwrap();
        assert_eq!(c.metrics.listen_addr().unwrap(), Some("127.0.0.1:9109".parse().unwrap()));
        assert_eq!(c.logging.format, LogFormat::Json);
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases = [
            ("listen", "[appservice]\nlisten = \"nonsense\"", "appservice.listen"),
            ("url", "[homeserver]\nurl = \"ftp://x\"", "homeserver.url"),
            ("db", "[database]\nurl = \"mysql://x\"", "database.url"),
            ("localpart", "[appservice]\nsender_localpart = \"Bad Name\"", "appservice.sender_localpart"),
            ("aliases", "[appservice]\nalias_prefix = \"Fleet \"", "appservice.alias_prefix"),
            ("glob", "[access]\nusers = [\"nobody\"]", "access.users[0]"),
            ("concurrency", "[dispatch]\nconcurrency = 0", "dispatch.concurrency"),
            ("unknown", "[appservice]\nas_tokn = \"x\"", "appservice.as_tokn"),
            ("type", "[homeserver]\ntimeout_secs = \"soon\"", "homeserver.timeout_secs"),
            ("allow_hosts", "[browser]\nallow_hosts = [\"ok.example\", \"bad host\"]", "browser.allow_hosts[1]"),
            ("max_tabs", "[browser]\nmax_tabs = 0", "browser.max_tabs"),
            ("metrics", "[metrics]\nlisten = \"everywhere\"", "metrics.listen"),
            ("log format", "[logging]\nformat = \"xml\"", "logging.format"),
            ("cdp_url", "[browser]\ncdp_url = \"file:///x\"", "browser.cdp_url"),
            ("page_bytes", "[browser]\nmax_page_bytes = 10", "browser.max_page_bytes"),
        ];
        for (name, extra, key) in cases {
            // Later keys in the same table override: append the bad key to a valid base.
            let text = merge(MINIMAL, extra);
            let err = Config::from_toml(&text).expect_err(name);
            assert_eq!(key_of(err), key, "case {name}");
        }
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = Config::from_toml("[homeserver]\nserver_name = \"x.y\"\n[appservice]\nas_token = \"a\"").unwrap_err();
        assert_eq!(key_of(err), "appservice.hs_token");
    }

    #[test]
    fn equal_tokens_are_refused() {
        let text = MINIMAL.replace("hs-secret-2", "as-secret-1");
        assert_eq!(key_of(Config::from_toml(&text).unwrap_err()), "appservice.hs_token");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::from_toml(MINIMAL).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("as-secret-1") && !dump.contains("hs-secret-2"), "{dump}");
    }

    #[test]
    fn toml_round_trip_keeps_every_value() {
        // Every secret set, each to its own value: `Debug` prints them all as `***`, so the
        // values themselves are compared.
        let text = format!(
            "{MINIMAL}\n[database]\nurl = \"postgres://u:db-pass-3@h/d\"\n[llm]\napi_key = \"llm-key-4\"\n\
             [llm.fallback]\nbase_url = \"http://f/v1\"\nchat_model = \"s\"\napi_key = \"fallback-key-5\"\n\
             [planka]\napi_key = \"planka-key-6\"\npassword = \"planka-pass-7\"\nwebhook_token = \"hook-8\"\n\
             [chroma]\ntoken = \"chroma-9\"\n"
        );
        let c = Config::from_toml(&text).unwrap();
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(c.to_toml(), again.to_toml());
        let secrets = |c: &Config| {
            let fallback = c.llm.fallback.as_ref().unwrap();
            [
                &c.appservice.as_token,
                &c.appservice.hs_token,
                &c.database.url,
                &c.llm.api_key,
                &fallback.api_key,
                &c.planka.api_key,
                &c.planka.password,
                &c.planka.webhook_token,
                &c.chroma.token,
            ]
            .map(|s| s.expose().to_owned())
        };
        let expected = [
            "as-secret-1",
            "hs-secret-2",
            "postgres://u:db-pass-3@h/d",
            "llm-key-4",
            "fallback-key-5",
            "planka-key-6",
            "planka-pass-7",
            "hook-8",
            "chroma-9",
        ];
        assert_eq!(secrets(&c), expected);
        assert_eq!(secrets(&again), expected);
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults() {
        let c = Config::from_toml(&format!("{MINIMAL}\n[llm]\nchat_model = \"qwen3:8b\"\n")).unwrap();
        assert_eq!(c.llm.chat_model, "qwen3:8b");
        assert_eq!(c.llm.base_url, "http://127.0.0.1:11434/v1");
        let c = Config::from_toml(&format!("{MINIMAL}\n[chroma]\ncollection = \"x\"\n")).unwrap();
        assert_eq!(c.chroma.url, "http://127.0.0.1:8000");
    }

    #[test]
    fn fallback_is_optional_and_validated() {
        let with =
            format!("{MINIMAL}\n[llm.fallback]\nbase_url = \"http://10.0.0.2:8080/v1\"\nchat_model = \"small\"\n");
        let c = Config::from_toml(&with).unwrap();
        let f = c.llm.fallback.unwrap();
        assert_eq!((f.chat_model.as_str(), f.cooldown_secs), ("small", 60));
        let bad = with.replace("http://10.0.0.2:8080/v1", "nope");
        assert_eq!(key_of(Config::from_toml(&bad).unwrap_err()), "llm.fallback.base_url");
    }

    #[test]
    fn coding_agents_get_their_defaults_and_bad_ones_name_their_key() {
        let c =
            Config::from_toml(&format!("{MINIMAL}\n[agents.pi]\n[agents.claude]\n[agents.ci]\nrooms = [\"#dev:*\"]\n"))
                .unwrap();
        let pi = &c.agents["pi"];
        assert_eq!((pi.display_name.as_str(), pi.rooms.as_slice()), ("pi", ["*".to_owned()].as_slice()));
        assert_eq!(pi.command, ["pi", "--mode", "rpc"]);
        assert_eq!(pi.workdir, DEFAULT_AGENT_WORKDIR);
        assert_eq!(c.agents["claude"].command[0], "claude");
        assert_eq!(
            (c.agents["ci"].command.as_slice(), c.agents["ci"].rooms.as_slice()),
            (["ci".to_owned()].as_slice(), ["#dev:*".to_owned()].as_slice())
        );
        assert_eq!(c.agent_api.requests_per_second, 20);
        assert_eq!(c.agent_api.burst, 100);
        let cases = [
            ("[agents.\"Bad Name\"]", "agents.Bad Name"),
            ("[agents.pi]\nrooms = [\"dev\"]", "agents.pi.rooms[0]"),
            ("[agents.pi]\ncommand = [\"\"]", "agents.pi.command"),
            ("[agents.pi]\nflavour = 1", "agents.pi.flavour"),
            ("[agent_api]\nburst = 0", "agent_api.burst"),
        ];
        for (extra, key) in cases {
            let err = Config::from_toml(&format!("{MINIMAL}\n{extra}\n")).expect_err(extra);
            assert_eq!(key_of(err), key, "{extra}");
        }
    }

    #[test]
    fn env_var_names_follow_the_contract() {
        assert_eq!(env_var_for("llm.base_url"), "CONCLAVE_LLM__BASE_URL");
    }

    /// Appends `extra`'s keys into the matching tables of `base`.
    fn merge(base: &str, extra: &str) -> String {
        let mut lines: Vec<String> = base.lines().map(|l| l.trim().to_string()).collect();
        let mut table = String::new();
        for line in extra.lines() {
            if line.starts_with('[') {
                table = line.to_string();
                if !lines.contains(&table) {
                    lines.push(table.clone());
                }
                continue;
            }
            let pos = lines.iter().position(|l| *l == table).unwrap();
            lines.insert(pos + 1, line.to_string());
        }
        lines.join("\n")
    }
}
