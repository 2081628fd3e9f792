//! Every text the agent shows to people, in one place, so wording stays consistent and tests can
//! refer to it.

/// `!help`: the commands that exist today.
pub fn help() -> String {
    "**Commands** (`!` is the prefix; `/x` sent as a message works too)\n\
     - `!help` — this list\n\
     - `!ping` — check that I am here; answers `pong` with the time your message took to reach me"
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
