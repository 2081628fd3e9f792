//! The commands coding agents run in the workspace (`post`, `progress`, `inbox`, `task`, `search`,
//! `kb search`): an HTTP client of the running agent's `/conclave/v1` API at `$CONCLAVE_AGENT_URL`
//! (default `http://127.0.0.1:9009`) with `$CONCLAVE_AGENT_TOKEN`. No config file is read, so they
//! work as any user. Only the documented output goes to stdout; exit codes: 0 done, 1 refused or
//! failed (stderr says why), 2 usage.

use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub const URL_ENV: &str = "CONCLAVE_AGENT_URL";
pub const TOKEN_ENV: &str = "CONCLAVE_AGENT_TOKEN";
pub const STATE_ENV: &str = "CONCLAVE_AGENT_STATE";
const DEFAULT_URL: &str = "http://127.0.0.1:9009";
/// Tries of a request the API answers 429, the first included.
const TRIES: u32 = 4;
/// The longest wait of one 429 honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Post a message as this coding agent (Markdown); prints the event id.
    Post {
        /// Room id or alias [default: $CONCLAVE_ROOM]
        #[arg(long, env = "CONCLAVE_ROOM")]
        room: Option<String>,
        /// Post in the thread of this event [default: $CONCLAVE_THREAD]
        #[arg(long, env = "CONCLAVE_THREAD")]
        thread: Option<String>,
        /// Reply to this event.
        #[arg(long)]
        reply_to: Option<String>,
        /// Send as a notice (for status lines nobody needs to answer).
        #[arg(long)]
        notice: bool,
        /// Idempotency key: the same key again posts nothing new and prints the same event id.
        #[arg(long)]
        txn: Option<String>,
        /// The text; `-` reads it from stdin.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// One progress message edited in place: start, update, done, fail.
    #[command(subcommand)]
    Progress(ProgressCommand),
    /// Messages people sent this agent, one JSON object per line, each shown once.
    ///
    /// Mentions of it, direct chats with it, replies to its messages and messages in its threads.
    /// The cursor is kept in $CONCLAVE_AGENT_STATE (default ~/.local/state/conclave-agent/AGENT.cursor).
    Inbox {
        /// Wait up to this many seconds (at most 60) for a message when there is none.
        #[arg(long, value_name = "SECS")]
        wait: Option<u64>,
        /// Every message still kept, from the oldest, ignoring (and keeping) the cursor.
        #[arg(long)]
        all: bool,
    },
    /// Planka cards on the board of a room.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Search room history, one JSON object per result per line.
    ///
    /// Only rooms this agent's user is in; all of them without --room and $CONCLAVE_ROOM.
    Search {
        /// Room id or alias [default: $CONCLAVE_ROOM; all rooms when unset]
        #[arg(long, env = "CONCLAVE_ROOM")]
        room: Option<String>,
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
    },
    /// The knowledge base (crawled documentation).
    #[command(subcommand)]
    Kb(KbCommand),
}

#[derive(Subcommand, Debug)]
pub enum ProgressCommand {
    /// Post a progress message; prints its id.
    Start {
        /// Room id or alias [default: $CONCLAVE_ROOM]
        #[arg(long, env = "CONCLAVE_ROOM")]
        room: Option<String>,
        /// Post it in the thread of this event [default: $CONCLAVE_THREAD]
        #[arg(long, env = "CONCLAVE_THREAD")]
        thread: Option<String>,
        #[arg(required = true, num_args = 1..)]
        title: Vec<String>,
    },
    /// Show new text in the progress message.
    Update {
        id: String,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Mark it done (final), with an optional last text.
    Done { id: String, text: Vec<String> },
    /// Mark it failed (final), with an optional last text.
    Fail { id: String, text: Vec<String> },
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Create a card on the room's board; prints `{"card_id", "url", "event_id"}`.
    Create {
        /// Room id or alias [default: $CONCLAVE_ROOM]
        #[arg(long, env = "CONCLAVE_ROOM")]
        room: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Idempotency key: the same key again makes no second card and prints the same one
        #[arg(long)]
        txn: Option<String>,
        #[arg(required = true, num_args = 1..)]
        title: Vec<String>,
    },
    /// Comment on a card (its id or link).
    Comment {
        card: String,
        /// Idempotency key: the same key again posts no second comment
        #[arg(long)]
        txn: Option<String>,
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Move a card to a list of its board (by name).
    Move {
        card: String,
        #[arg(required = true, num_args = 1..)]
        list: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KbCommand {
    /// Search the knowledge base; one JSON object per result per line.
    Search {
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
    },
}

/// Why a command ended without doing its work.
enum Failure {
    /// Exit 2: the command cannot be run as given.
    Usage(String),
    /// Exit 1: the agent refused, or could not be reached.
    Refused(String),
}

type Outcome = Result<(), Failure>;

/// Runs one command; the exit code follows the contract.
pub fn run(command: Command) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Refused(format!("cannot start: {e}")))
        .and_then(|rt| rt.block_on(execute(command)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("conclave-agent: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(why)) => {
            eprintln!("conclave-agent: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Outcome {
    let api = Api::from_env()?;
    match command {
        Command::Post { room, thread, reply_to, notice, txn, text } => {
            let text = text_or_stdin(text)?;
            let mut body = json!({ "room": required_room(room)?, "text": text, "notice": notice });
            set_opt(&mut body, "thread", thread);
            set_opt(&mut body, "reply_to", reply_to);
            set_opt(&mut body, "txn", txn);
            let v = api.call(Method::POST, "/conclave/v1/messages", Some(body)).await?;
            print_line(v["event_id"].as_str().unwrap_or_default())
        }
        Command::Progress(ProgressCommand::Start { room, thread, title }) => {
            let mut body = json!({ "room": required_room(room)?, "title": title.join(" ") });
            set_opt(&mut body, "thread", thread);
            let v = api.call(Method::POST, "/conclave/v1/progress", Some(body)).await?;
            print_line(v["id"].as_str().unwrap_or_default())
        }
        Command::Progress(ProgressCommand::Update { id, text }) => progress(&api, &id, Some(text), "running").await,
        Command::Progress(ProgressCommand::Done { id, text }) => progress(&api, &id, Some(text), "done").await,
        Command::Progress(ProgressCommand::Fail { id, text }) => progress(&api, &id, Some(text), "failed").await,
        Command::Inbox { wait, all } => inbox(&api, wait, all).await,
        Command::Task(TaskCommand::Create { room, description, txn, title }) => {
            let mut body = json!({ "room": required_room(room)?, "title": title.join(" ") });
            set_opt(&mut body, "description", description);
            set_opt(&mut body, "txn", txn);
            let v = api.call(Method::POST, "/conclave/v1/tasks", Some(body)).await?;
            print_line(&v.to_string())
        }
        Command::Task(TaskCommand::Comment { card, txn, text }) => {
            let path = format!("/conclave/v1/tasks/{}/comments", segment(&card));
            let mut body = json!({ "text": text.join(" ") });
            set_opt(&mut body, "txn", txn);
            api.call(Method::POST, &path, Some(body)).await.map(drop)
        }
        Command::Task(TaskCommand::Move { card, list }) => {
            let path = format!("/conclave/v1/tasks/{}/move", segment(&card));
            api.call(Method::POST, &path, Some(json!({ "list": list.join(" ") }))).await.map(drop)
        }
        Command::Search { room, query } => {
            let mut path = format!("/conclave/v1/search?q={}", segment(&query.join(" ")));
            if let Some(room) = room.filter(|r| !r.trim().is_empty()) {
                path.push_str(&format!("&room={}", segment(&room)));
            }
            print_results(&api.call(Method::GET, &path, None).await?)
        }
        Command::Kb(KbCommand::Search { query }) => {
            let path = format!("/conclave/v1/kb/search?q={}", segment(&query.join(" ")));
            print_results(&api.call(Method::GET, &path, None).await?)
        }
    }
}

async fn progress(api: &Api, id: &str, text: Option<Vec<String>>, state: &str) -> Outcome {
    let mut body = json!({ "state": state });
    set_opt(&mut body, "text", text.map(|t| t.join(" ")).filter(|t| !t.is_empty()));
    api.call(Method::PUT, &format!("/conclave/v1/progress/{}", segment(id)), Some(body)).await.map(drop)
}

/// Prints new messages as JSON lines and then moves the cursor past them, so a loop of
/// `inbox --wait 30` shows each message once (a crash between the two shows it again, never loses it).
async fn inbox(api: &Api, wait: Option<u64>, all: bool) -> Outcome {
    if all {
        let mut after = "0".to_owned();
        loop {
            let v = api.call(Method::GET, &format!("/conclave/v1/inbox?after={after}"), None).await?;
            let shown = print_messages(&v)?;
            match v["next"].as_str() {
                Some(next) if shown > 0 && next != after => after = next.to_owned(),
                _ => return Ok(()),
            }
        }
    }
    let state = match std::env::var_os(STATE_ENV).filter(|s| !s.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => {
            let me = api.call(Method::GET, "/conclave/v1/whoami", None).await?;
            default_state_path(me["agent"].as_str().unwrap_or("agent"))?
        }
    };
    let cursor = match std::fs::read_to_string(&state) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "0".to_owned(),
        Err(e) => return Err(Failure::Refused(format!("cannot read the cursor file {}: {e}", state.display()))),
    };
    if !cursor.bytes().all(|b| b.is_ascii_digit()) || cursor.is_empty() {
        return Err(Failure::Refused(format!("the cursor file {} does not hold a cursor", state.display())));
    }
    let wait = wait.unwrap_or(0).min(60);
    let v = api.call(Method::GET, &format!("/conclave/v1/inbox?after={cursor}&wait={wait}"), None).await?;
    print_messages(&v)?;
    if let Some(next) = v["next"].as_str().filter(|n| *n != cursor) {
        save_cursor(&state, next).map_err(|e| {
            Failure::Refused(format!(
                "cannot write the cursor file {}: {e} (these messages will show again)",
                state.display()
            ))
        })?;
    }
    Ok(())
}

fn default_state_path(agent: &str) -> Result<PathBuf, Failure> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Failure::Usage(format!("neither ${STATE_ENV} nor $HOME is set: nowhere to keep the cursor")))?;
    let name: String =
        agent.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    Ok(PathBuf::from(home).join(".local/state/conclave-agent").join(format!("{name}.cursor")))
}

/// Writes the cursor to a temporary file and renames it over the old one: never half a cursor.
fn save_cursor(path: &std::path::Path, cursor: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{cursor}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The API's message objects, one per line, exactly as sent; returns how many.
fn print_messages(v: &Value) -> Result<usize, Failure> {
    let messages = v["messages"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for m in &messages {
        writeln!(out, "{m}").map_err(|e| Failure::Refused(format!("cannot write to stdout: {e}")))?;
    }
    out.flush().map_err(|e| Failure::Refused(format!("cannot write to stdout: {e}")))?;
    Ok(messages.len())
}

fn print_results(v: &Value) -> Outcome {
    let mut out = std::io::stdout().lock();
    for r in v["results"].as_array().into_iter().flatten() {
        writeln!(out, "{r}").map_err(|e| Failure::Refused(format!("cannot write to stdout: {e}")))?;
    }
    Ok(())
}

fn print_line(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Refused(format!("cannot write to stdout: {e}")))
}

fn set_opt(body: &mut Value, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
        body[key] = v.into();
    }
}

fn required_room(room: Option<String>) -> Result<String, Failure> {
    room.filter(|r| !r.trim().is_empty())
        .ok_or_else(|| Failure::Usage("no room: pass --room (an id !… or alias #…) or set $CONCLAVE_ROOM".into()))
}

/// The words of a text argument, or stdin for `-`.
fn text_or_stdin(words: Vec<String>) -> Result<String, Failure> {
    if words.len() == 1 && words[0] == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(text.trim_end_matches('\n').to_owned());
    }
    Ok(words.join(" "))
}

/// A path segment or query value, percent-encoded.
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn from_env() -> Result<Self, Failure> {
        let base = std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_URL.into());
        let base = base.trim().trim_end_matches('/').to_owned();
        url::Url::parse(&base).map_err(|e| Failure::Usage(format!("${URL_ENV} = {base:?} is not a URL: {e}")))?;
        let token =
            std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).ok_or_else(|| {
                Failure::Usage(format!(
                    "${TOKEN_ENV} is not set (an operator makes one with `conclave-agent token --agent NAME`)"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A long poll waits up to 60 s; everything else answers far sooner.
            .timeout(Duration::from_secs(90))
            .user_agent(concat!("conclave-agent-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Refused(format!("cannot start the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// One request; a 429 is tried again after its `retry_after_ms`, up to [`TRIES`] in all.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        for attempt in 1..=TRIES {
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| {
                Failure::Refused(format!("cannot reach the agent at {}: {}", self.base, crate::error_text::chain(&e)))
            })?;
            let status = response.status();
            let v: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(v);
            }
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < TRIES {
                let wait = v["retry_after_ms"].as_u64().map_or(Duration::from_secs(1), Duration::from_millis);
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
                continue;
            }
            let errcode = v["errcode"].as_str().unwrap_or("M_UNKNOWN");
            let error = v["error"].as_str().unwrap_or("no reason given");
            return Err(Failure::Refused(format!("refused ({} {errcode}): {error}", status.as_u16())));
        }
        unreachable!("the last try returns")
    }
}
