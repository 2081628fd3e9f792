//! Executing chat commands (their words are parsed by [`crate::syntax`]): the quick ones here and
//! in `jobs`, `llm` and `search` (answered in the room's lane); those that call a backend that may
//! be slow (Planka, search, the model list, `!status`'s probes) run as [`Kind::Backend`] jobs through [`run_job`].

pub mod jobs;
pub mod llm;
pub mod search;
pub mod status;
pub mod task;

use crate::context::Context;
use crate::handler::{self, HandleError};
use crate::jobs::{JobEnd, Kind, RunningJob};
use crate::matrix::markdown::Md;
use crate::store::Write;
use crate::strings;
use crate::syntax::{self, Command, IndexChange};
use ruma::events::room::message::{MessageType, OriginalRoomMessageEvent};

/// Longest `!jobs` label taken from a command's text.
const LABEL_CHARS: usize = 60;

/// Queues the command in `trigger` as a backend job (its runner reads the command again from the
/// trigger).
pub async fn request(
    ctx: &Context,
    trigger: &OriginalRoomMessageEvent,
    raw: &str,
) -> Result<Option<Write>, HandleError> {
    let body = command_text(trigger).unwrap_or_default();
    let label: String = body.lines().next().unwrap_or_default().chars().take(LABEL_CHARS).collect();
    crate::jobs::enqueue(ctx, Kind::Backend, trigger, raw, &serde_json::json!({}), &label).await
}

/// Runs a backend job: the command's one reply, from Planka, the vector store or the model server.
pub async fn run_job(ctx: &Context, job: &RunningJob) -> JobEnd {
    let ev = &job.trigger;
    let Some(command) = command_text(ev).and_then(syntax::parse) else {
        return JobEnd::Failed { reason: "the job's trigger is no command".into(), told: false };
    };
    let result: Result<(), HandleError> = async {
        let reply = match &command {
            Command::Task(_) | Command::Board(_) => return task::run(ctx, ev, &command).await,
            Command::Model { name } => llm::model(ctx, ev, name.as_deref()).await?,
            Command::Status => status::run(ctx, ev).await?,
            Command::Search { query, all: false } => search::run(ctx, ev, query).await,
            Command::Search { query, all: true } => search::run_all(ctx, ev, query).await?,
            Command::Index(IndexChange::Status) => search::index(ctx, ev, IndexChange::Status).await?,
            other => return Err(HandleError::Unexpected(format!("{other:?} is not a backend command"))),
        };
        handler::reply_to(ctx, ev, &reply).await
    }
    .await;
    result.into()
}

fn command_text(ev: &OriginalRoomMessageEvent) -> Option<&str> {
    match &ev.content.msgtype {
        MessageType::Text(text) => Some(&text.body),
        _ => None,
    }
}

/// What the command needs to know about the message that carried it.
pub struct Invocation {
    /// Milliseconds between the message's timestamp and now, if known.
    pub lag_ms: Option<i64>,
}

/// The reply text for a command whose answer needs no backend; the others run in their modules
/// (`llm` here, `chat` for `Ask`).
pub fn execute(command: &Command, invocation: &Invocation) -> Md {
    match command {
        Command::Ask { .. }
        | Command::Browse { .. }
        | Command::Model { .. }
        | Command::Prompt(_)
        | Command::Usage
        | Command::Jobs
        | Command::Status
        | Command::Cancel
        | Command::Search { .. }
        | Command::Index(_)
        | Command::Task(_)
        | Command::Board(_) => unreachable!("commands with I/O are run by their modules"),
        Command::Help => strings::help(),
        Command::Ping => strings::pong(invocation.lag_ms),
        Command::Unknown { name } => strings::unknown_command(name),
        Command::Invalid { reason } => strings::invalid_command(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_exactly_one_reply() {
        let inv = Invocation { lag_ms: Some(12) };
        assert!(execute(&Command::Ping, &inv).starts_with("pong"));
        assert!(execute(&Command::Ping, &inv).contains("12 ms"));
        assert!(execute(&Command::Help, &inv).contains("!ping"));
        assert!(execute(&Command::Unknown { name: "x".into() }, &inv).contains("!help"));
    }
}
