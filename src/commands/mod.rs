//! Executing chat commands (their words are parsed by [`crate::syntax`]): the quick ones here,
//! one module per family with I/O.

pub mod llm;
pub mod search;
pub mod task;

use crate::strings;
use crate::syntax::Command;

/// What the command needs to know about the message that carried it.
pub struct Invocation {
    /// Milliseconds between the message's timestamp and now, if known.
    pub lag_ms: Option<i64>,
}

/// The reply text for a command whose answer needs no backend; the others run in their modules
/// (`llm` here, `chat` for `Ask`).
pub fn execute(command: &Command, invocation: &Invocation) -> String {
    match command {
        Command::Ask { .. }
        | Command::Model { .. }
        | Command::Prompt(_)
        | Command::Usage
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
