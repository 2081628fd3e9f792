//! Every text the agent shows to people, in one place, so wording stays consistent and tests can
//! refer to it.

/// `!help`: the commands that exist today.
pub fn help() -> String {
    "**Commands** (`!` is the prefix; `/x` sent as a message works too)\n\
     - `!help` — this list\n\
     - `!ping` — check that I am here; answers `pong` with the time your message took to reach me\n\
     - `!ask <question>` — ask me anything; mentioning me (`agent: …`) or writing in a direct chat \
     with me does the same"
        .to_owned()
}

pub fn pong(lag_ms: Option<i64>) -> String {
    match lag_ms {
        Some(ms) => format!("pong ({ms} ms from your message to my answer)"),
        None => "pong".to_owned(),
    }
}

pub fn unknown_command(name: &str) -> String {
    format!("I don't know `!{name}`. Type `!help` for the commands I understand.")
}

pub fn invalid_command(reason: &str) -> String {
    format!("{reason} — type `!help` for usage.")
}

pub fn takes_no_arguments(name: &str) -> String {
    format!("`!{name}` takes no arguments")
}

pub fn not_allowed() -> String {
    "You are not allowed to give me commands here. An operator can add you to `access.users` in my configuration."
        .to_owned()
}

pub fn encrypted_room_notice() -> String {
    "This room is end-to-end encrypted, and I cannot read encrypted messages yet, so I will not see \
     commands or questions sent here. Talk to me in an unencrypted room for now."
        .to_owned()
}

pub fn ask_needs_a_question() -> String {
    "`!ask` needs a question, e.g. `!ask what did we decide about the login page?`".to_owned()
}

/// The model could not be asked at all.
pub fn llm_failed(error: &str, available: Option<&[String]>) -> String {
    let mut text = format!("I could not answer: {error}.");
    match available {
        Some(models) if !models.is_empty() => {
            text.push_str(&format!(
                " Models on that server: {}.",
                models.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ));
            text.push_str(" An operator can set `llm.chat_model`.");
        }
        _ => text.push_str(" Check that the model server is running, then ask again."),
    }
    text
}

/// Appended to an answer whose stream broke off.
pub fn answer_cut(error: &str) -> String {
    format!("\n\n_(my answer was cut off: {error})_")
}

pub fn empty_answer() -> String {
    "The model returned an empty answer. Try rephrasing the question.".to_owned()
}
