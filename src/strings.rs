//! Every text the agent shows to people, in one place, so wording stays consistent and tests can
//! refer to it.

/// `!help`: the commands that exist today.
pub fn help() -> String {
    "**Commands** (`!` is the prefix; `/x` sent as a message works too)\n\
     - `!help` — this list\n\
     - `!ping` — check that I am here; answers `pong` with the time your message took to reach me\n\
     - `!ask <question>` — ask me anything; mentioning me (`agent: …`) or writing in a direct chat \
     with me does the same\n\
     - `!model [name]` — the models I can use, and this room's; admins set it\n\
     - `!prompt [text|reset]` — this room's instructions for me; admins set them\n\
     - `!usage` — tokens used by this room and by you"
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

pub fn model_usage() -> String {
    "`!model` takes one model name (or none, to list them)".to_owned()
}

pub fn admins_only(what: &str) -> String {
    format!("Only admins can {what}. An operator can add you to `access.admins`.")
}

pub fn models(current: &str, available: Result<&[String], String>) -> String {
    let mut text = format!("This room uses `{current}`.");
    match available {
        Ok(models) => text.push_str(&format!(
            " Available: {}.",
            models.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        )),
        Err(e) => text.push_str(&format!(" I cannot list the others: {e}.")),
    }
    text
}

pub fn model_set(model: &str) -> String {
    format!("This room now uses `{model}`.")
}

pub fn model_reset(default: &str) -> String {
    format!("This room uses the default model again, `{default}`.")
}

pub fn unknown_model(model: &str, available: &[String]) -> String {
    format!(
        "There is no model `{model}` on the model server. Available: {}.",
        available.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
    )
}

pub fn cannot_check_model(error: &str) -> String {
    format!("I cannot check the model right now: {error}. Try again when the model server is up.")
}

pub fn prompt_shown(prompt: &str, custom: bool) -> String {
    let quoted: String = prompt.lines().map(|l| format!("> {l}\n")).collect();
    let whose = if custom { "This room's instructions" } else { "The default instructions (no room-specific ones)" };
    format!("{whose}:\n\n{quoted}")
}

pub fn prompt_set() -> String {
    "Saved: I will follow these instructions in this room.".to_owned()
}

pub fn prompt_reset() -> String {
    "This room uses the default instructions again.".to_owned()
}

pub fn usage(room: [(i64, i64, i64); 2], user: [(i64, i64, i64); 2]) -> String {
    let line = |(requests, prompt, completion): (i64, i64, i64)| {
        format!("{requests} answers, {prompt} prompt + {completion} answer tokens")
    };
    format!(
        "**Token use**\n- this room: today {}; last 30 days {}\n- you (all rooms): today {}; last 30 days {}",
        line(room[0]),
        line(room[1]),
        line(user[0]),
        line(user[1])
    )
}

pub fn rate_limited(per_minute: u32) -> String {
    format!("You have asked {per_minute} questions in the last minute; please wait a moment before the next one.")
}

pub fn queued() -> String {
    "Other answers are being written; yours is queued and will follow.".to_owned()
}

pub fn answered_by_fallback(model: &str) -> String {
    format!("\n\n_(answered by the fallback model `{model}`: the main model server is not answering)_")
}
