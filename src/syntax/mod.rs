//! The chat command language: [`parse`] turns a message body into a [`Command`] — pure and
//! table-tested, below everything that executes commands (`commands`, `chat`, `backfill` all ask
//! it whether a message is a command).

pub mod task;

use crate::matrix::markdown::Md;
use crate::strings;
pub use task::{BoardCommand, TaskCommand};

/// A parsed command. Adding a command = one arm here, one in [`parse`], and its execution in
/// `commands`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Ping,
    /// `!status`: every backend up/down with its latency, the queues, uptime and version.
    Status,
    /// `!ask <question>`: a chat answer, asked explicitly.
    Ask {
        question: String,
    },
    /// `!browse <url> [question]`: the page in Chromium, a screenshot, and the question answered
    /// from the page (or the page summarised).
    Browse {
        url: String,
        question: Option<String>,
    },
    /// `!model [name]`: show the models (and this room's), or set this room's (admins).
    Model {
        name: Option<String>,
    },
    /// `!prompt [text|reset]`: show, set or reset this room's system prompt (admins).
    Prompt(PromptChange),
    /// `!usage`: token use of this room and of the asker.
    Usage,
    /// `!jobs`: this room's queued and running work.
    Jobs,
    /// `!cancel`: stop a job (the one replied to, else the asker's latest here).
    Cancel,
    /// `!search [--all] <query>`: the messages nearest in meaning, of this room or (`--all`) of
    /// every room the asker is joined to.
    Search {
        query: String,
        all: bool,
    },
    /// `!index [on|off|status|backfill]`: whether this room is indexed for search (admins switch),
    /// and reading its earlier history in.
    Index(IndexChange),
    /// `!task …`: Planka cards (see [`task`]).
    Task(TaskCommand),
    /// `!board …`: the room's Planka board.
    Board(BoardCommand),
    /// `!name` that is not a command.
    Unknown {
        name: String,
    },
    /// A known command used wrongly; `reason` says how.
    Invalid {
        reason: Md,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexChange {
    Status,
    On,
    Off,
    Backfill,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptChange {
    Show,
    Set(String),
    Reset,
}

/// Commands that exist. A `/name` message counts as a command only for these, so a message
/// that starts with a path (`/etc/hosts is …`) is not answered.
const KNOWN: &[&str] = &[
    "help", "ping", "status", "ask", "browse", "model", "prompt", "usage", "jobs", "cancel", "search", "index", "task",
    "board",
];

/// Parses a message body; `None` when it is not a command at all.
pub fn parse(body: &str) -> Option<Command> {
    let body = strip_reply_fallback(body).trim_start();
    let (prefix, rest) = body.split_at(body.chars().next().filter(|c| *c == '!' || *c == '/')?.len_utf8());
    let mut words = rest.split_whitespace();
    let name = words.next().filter(|_| !rest.starts_with(char::is_whitespace))?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return None;
    }
    let name = name.to_ascii_lowercase();
    if prefix == "/" && !KNOWN.contains(&name.as_str()) {
        return None;
    }
    let args: Vec<&str> = words.collect();
    // The text after the name, as written (for free text such as a question).
    let text = rest.trim_start()[name.len()..].trim();
    Some(match name.as_str() {
        "help" | "ping" | "status" | "usage" | "jobs" | "cancel" if !args.is_empty() => {
            Command::Invalid { reason: strings::takes_no_arguments(&name) }
        }
        "usage" => Command::Usage,
        "jobs" => Command::Jobs,
        "cancel" => Command::Cancel,
        "model" if args.len() > 1 => Command::Invalid { reason: strings::model_usage() },
        "model" => Command::Model { name: args.first().map(|a| (*a).to_owned()) },
        "prompt" if text.is_empty() => Command::Prompt(PromptChange::Show),
        "prompt" if text.eq_ignore_ascii_case("reset") => Command::Prompt(PromptChange::Reset),
        "prompt" => Command::Prompt(PromptChange::Set(text.to_owned())),
        "help" => Command::Help,
        "ping" => Command::Ping,
        "status" => Command::Status,
        "ask" if text.is_empty() => Command::Invalid { reason: strings::ask_needs_a_question() },
        "ask" => Command::Ask { question: text.to_owned() },
        "browse" => match args.first() {
            None => Command::Invalid { reason: strings::browse_usage() },
            Some(url) => {
                let question = text[url.len()..].trim();
                Command::Browse {
                    url: (*url).to_owned(),
                    question: (!question.is_empty()).then(|| question.to_owned()),
                }
            }
        },
        "search" => {
            let all = args.first() == Some(&"--all");
            let query = if all { text["--all".len()..].trim() } else { text };
            if query.is_empty() {
                Command::Invalid { reason: strings::search_needs_a_query() }
            } else {
                Command::Search { query: query.to_owned(), all }
            }
        }
        "index" => match args.as_slice() {
            [] | ["status"] => Command::Index(IndexChange::Status),
            ["on"] => Command::Index(IndexChange::On),
            ["off"] => Command::Index(IndexChange::Off),
            ["backfill"] => Command::Index(IndexChange::Backfill),
            _ => Command::Invalid { reason: strings::index_usage() },
        },
        "task" => task::task(text),
        "board" => task::board(text),
        _ => Command::Unknown { name },
    })
}

/// Drops the `> <@user> quoted` lines some clients put before the text of a reply.
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while let Some(line_end) = rest.find('\n') {
        if !rest.starts_with("> ") && !rest.starts_with(">\n") {
            break;
        }
        rest = &rest[line_end + 1..];
    }
    if rest.starts_with("> ") { body } else { rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let invalid = |name: &str| Some(Command::Invalid { reason: strings::takes_no_arguments(name) });
        let unknown = |name: &str| Some(Command::Unknown { name: name.into() });
        let search = |query: &str, all: bool| Command::Search { query: query.into(), all };
        let cases: &[(&str, &str, Option<Command>)] = &[
            ("ping", "!ping", Some(Command::Ping)),
            ("slash ping", "/ping", Some(Command::Ping)),
            ("upper case", "!PING", Some(Command::Ping)),
            ("leading space", "  !help", Some(Command::Help)),
            ("trailing newline", "!help\n", Some(Command::Help)),
            ("trailing junk", "!ping now", invalid("ping")),
            ("no loose prefix match", "!pingpong", unknown("pingpong")),
            ("unknown bang", "!frobnicate", unknown("frobnicate")),
            ("unknown slash is text", "/frobnicate", None),
            ("path is text", "/etc/hosts is broken", None),
            ("plain text", "hello !ping", None),
            ("bang alone", "!", None),
            ("bang space", "! ping", None),
            ("exclamations", "!!!", None),
            ("emphasis", "!important: read this", None),
            ("empty", "", None),
            ("reply fallback", "> <@bob:x.y> hi\n> there\n\n!ping", Some(Command::Ping)),
            (
                "ask",
                "!ask what is  *this*?\nsecond line",
                Some(Command::Ask { question: "what is  *this*?\nsecond line".into() }),
            ),
            ("slash ask", "/ask why", Some(Command::Ask { question: "why".into() })),
            ("browse", "!browse example.org", Some(Command::Browse { url: "example.org".into(), question: None })),
            (
                "browse question",
                "!browse https://example.org/x  what changed?\nin 2.0",
                Some(Command::Browse {
                    url: "https://example.org/x".into(),
                    question: Some("what changed?\nin 2.0".into()),
                }),
            ),
            ("browse nothing", "!browse", Some(Command::Invalid { reason: strings::browse_usage() })),
            ("ask nothing", "!ask  ", Some(Command::Invalid { reason: strings::ask_needs_a_question() })),
            ("model show", "!model", Some(Command::Model { name: None })),
            ("model set", "!model qwen3:8b", Some(Command::Model { name: Some("qwen3:8b".into()) })),
            ("model two", "!model a b", Some(Command::Invalid { reason: strings::model_usage() })),
            ("prompt show", "!prompt", Some(Command::Prompt(PromptChange::Show))),
            ("prompt reset", "!prompt Reset", Some(Command::Prompt(PromptChange::Reset))),
            (
                "prompt set",
                "!prompt Answer in French.\nAlways.",
                Some(Command::Prompt(PromptChange::Set("Answer in French.\nAlways.".into()))),
            ),
            ("usage", "!usage", Some(Command::Usage)),
            ("usage junk", "!usage now", invalid("usage")),
            ("jobs", "!jobs", Some(Command::Jobs)),
            ("status", "!status", Some(Command::Status)),
            ("slash status", "/status", Some(Command::Status)),
            ("status junk", "!status now", invalid("status")),
            ("jobs junk", "!jobs all", invalid("jobs")),
            ("cancel", "!cancel", Some(Command::Cancel)),
            ("slash cancel", "/cancel", Some(Command::Cancel)),
            ("cancel junk", "!cancel it", invalid("cancel")),
            ("search", "!search  the login  bug ", Some(search("the login  bug", false))),
            ("slash search", "/search deploy", Some(search("deploy", false))),
            ("search nothing", "!search", Some(Command::Invalid { reason: strings::search_needs_a_query() })),
            ("search all", "!search --all the login\nbug", Some(search("the login\nbug", true))),
            ("slash search all", "/search  --all  deploy ", Some(search("deploy", true))),
            (
                "search all nothing",
                "!search --all ",
                Some(Command::Invalid { reason: strings::search_needs_a_query() }),
            ),
            ("search all glued", "!search --alldeploy", Some(search("--alldeploy", false))),
            ("search all later", "!search deploy --all", Some(search("deploy --all", false))),
            ("search all twice", "!search --all --all", Some(search("--all", true))),
            ("index", "!index", Some(Command::Index(IndexChange::Status))),
            ("index status", "!index status", Some(Command::Index(IndexChange::Status))),
            ("index on", "!index on", Some(Command::Index(IndexChange::On))),
            ("index off", "!index off", Some(Command::Index(IndexChange::Off))),
            ("index backfill", "/index backfill", Some(Command::Index(IndexChange::Backfill))),
            ("index junk", "!index off now", Some(Command::Invalid { reason: strings::index_usage() })),
            ("index case", "!index ON", Some(Command::Invalid { reason: strings::index_usage() })),
        ];
        for (name, body, want) in cases {
            assert_eq!(&parse(body), want, "case {name}: {body:?}");
        }
    }

    #[test]
    fn help_lists_every_known_command() {
        for name in KNOWN {
            assert!(strings::help().contains(&format!("`!{name}")), "{name} missing from help");
        }
    }
}
