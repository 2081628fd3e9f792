//! Every text the agent shows to people, in one place, so wording stays consistent and tests can
//! refer to it.

use crate::matrix::markdown::code;

/// `!help`: the commands that exist today.
pub fn help() -> String {
    "**Commands** (`!` is the prefix; `/x` sent as a message works too)\n\
     - `!help` — this list\n\
     - `!ping` — check that I am here; answers `pong` with the time your message took to reach me\n\
     - `!status` — every backend I use (up, down or off, and how fast), my queues, uptime and version\n\
     - `!ask <question>` — ask me anything; mentioning me (`agent: …`) or writing in a direct chat \
     with me does the same\n\
     - `!model [name]` — the models I can use, and this room's; admins set it\n\
     - `!prompt [text|reset]` — this room's instructions for me; admins set them\n\
     - `!usage` — tokens used by this room and by you\n\
     - `!jobs` — what this room has waiting or running (answers, Planka, searches); `!cancel` in reply to \
     one of them (or its request) stops it — without a reply, your latest one here\n\
     - `!browse <url> [question]` — I open the page in a browser, post a screenshot, and answer your question \
     from the page (or summarise it)\n\
     - `!search <query>` — earlier messages of this room about that, with links to them; \
     `!search --all <query>` searches every room you and I are both in\n\
     - `!index [on|off|status|backfill]` — whether this room's messages are kept for `!search`; admins switch \
     it, and `backfill` reads the room's earlier history in\n\
     - `!task <title>` — a Planka card on this room's board (reply to a message to make it the description); \
     `!task list [list]`, `!task show <card>`, `!task move <card> <list>`, `!task done <card>`, \
     `!task comment <card> <text>`, `!task assign <card> <user>` — `<card>` is `#12`, a card id or link, \
     or left out when you reply to my message about the card\n\
     - `!board` — this room's Planka board; `!board bind <board id | \"Project/Board\"> [list]` binds one (admins)"
        .to_owned()
}

/// The queue depths `!status` shows.
pub struct Queues {
    pub inbox: i64,
    /// (kind, state, count) of the jobs not yet over.
    pub jobs: Vec<(String, String, i64)>,
    pub index_backlog: i64,
    pub dead_letters: i64,
}

/// `!status`: one line per backend (`probe::Report::line`), the queues, uptime, version.
pub fn status(lines: &[String], queues: Option<&Queues>, uptime: std::time::Duration) -> String {
    let mut text = format!(
        "**Status** — conclave-agent {}, up {}\n",
        env!("CARGO_PKG_VERSION"),
        duration(i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX))
    );
    for line in lines {
        text.push_str(&format!("- `{line}`\n"));
    }
    match queues {
        Some(q) => {
            let jobs = if q.jobs.is_empty() {
                "none".to_owned()
            } else {
                q.jobs.iter().map(|(kind, state, n)| format!("{kind} {n} {state}")).collect::<Vec<_>>().join(", ")
            };
            text.push_str(&format!(
                "\nQueues: inbox {}, jobs {jobs}, index backlog {}, dead letters {}",
                q.inbox, q.index_backlog, q.dead_letters
            ));
        }
        None => text.push_str("\nQueues: unknown (the database does not answer)"),
    }
    text
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

pub fn planka_notices_encrypted_room() -> String {
    "This room turned on end-to-end encryption, and I cannot encrypt messages yet, so I will not post \
     updates of its Planka board here. Bind the board in an unencrypted room (`!board bind`) to follow it there."
        .to_owned()
}

pub fn browse_usage() -> String {
    "`!browse` needs a link, e.g. `!browse https://example.org/changelog what changed in 2.0?`".to_owned()
}

/// Backslash before the characters that make Markdown inline syntax (emphasis, code, links,
/// images, HTML, tables), so text from a web page (a title, say) shows as itself (invariant 11).
/// Used within a line that starts with our own words, so block syntax (`#`, `-`, `1.`) cannot start.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '!' | '|' | '~' | '&') {
            out.push('\\');
        }
        // Line breaks would start new blocks.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    out
}

/// `!browse`'s status while the page loads.
pub fn browse_loading(url: &str) -> String {
    format!("Opening <{url}> …")
}

/// `!browse`'s status once the page is there and the model reads it.
pub fn browse_reading(title: &str) -> String {
    format!("Loaded “{}”; reading it…", escape_markdown(title))
}

/// What a `!browse` failure suggests doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrowseHint {
    /// The guard refused the address.
    Blocked,
    /// It may work later (timeout, browser unavailable, crashed tab).
    Retry,
    /// The link itself looks wrong (DNS, not a URL).
    CheckLink,
    None,
}

/// `!browse` could not show the page: what happened (`what`, the error's sentence), and what to
/// do when there is something.
pub fn browse_failed(url: &str, what: &str, hint: BrowseHint) -> String {
    let hint = match hint {
        BrowseHint::Blocked => {
            " I never open local, private or cloud-metadata addresses (an admin can allow a host with \
             `browser.allow_hosts`)."
        }
        BrowseHint::Retry => " Try again in a while.",
        BrowseHint::CheckLink => " Check the link.",
        BrowseHint::None => "",
    };
    format!("I could not open {}: {}.{hint}", escape_markdown(url), escape_markdown(what))
}

/// The alt text of `!browse`'s screenshot (plain text: `m.image` has no formatting).
pub fn browse_screenshot(title: &str, final_url: &str) -> String {
    let title = if title.trim().is_empty() { "(untitled page)" } else { title.trim() };
    format!("Screenshot of “{title}” — {final_url}")
}

pub fn ask_needs_a_question() -> String {
    "`!ask` needs a question, e.g. `!ask what did we decide about the login page?`".to_owned()
}

/// The model could not be asked at all.
/// Names from outside (models, cards) as code spans: a backtick in one cannot end its span.
fn code_list(names: &[String]) -> String {
    names.iter().map(|n| code(n)).collect::<Vec<_>>().join(", ")
}

pub fn llm_failed(error: &str, available: Option<&[String]>) -> String {
    let mut text = format!("I could not answer: {error}.");
    match available {
        Some(models) if !models.is_empty() => {
            text.push_str(&format!(" Models on that server: {}.", code_list(models)));
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

pub fn question_cut() -> String {
    "\n\n_(your message was very long: I read only its beginning)_".to_owned()
}

pub fn answer_cancelled() -> String {
    "\n\n_(cancelled)_".to_owned()
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
    let mut text = format!("This room uses {}.", code(current));
    match available {
        Ok(models) => text.push_str(&format!(" Available: {}.", code_list(models))),
        Err(e) => text.push_str(&format!(" I cannot list the others: {e}.")),
    }
    text
}

pub fn model_set(model: &str) -> String {
    format!("This room now uses {}.", code(model))
}

pub fn model_reset(default: &str) -> String {
    format!("This room uses the default model again, {}.", code(default))
}

pub fn unknown_model(model: &str, available: &[String]) -> String {
    format!("There is no model {} on the model server. Available: {}.", code(model), code_list(available))
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

pub fn commands_too_fast(per_minute: u32) -> String {
    format!(
        "You are sending me commands faster than {per_minute} a minute, so I am ignoring the rest for now. \
         Give it a minute."
    )
}

pub fn rate_limited(per_minute: u32) -> String {
    format!("You have asked {per_minute} questions in the last minute; please wait a moment before the next one.")
}

// ---- Jobs: slow work that waits its turn ----

/// The status of a job that waits: `ahead` jobs start before it.
pub fn job_queued(ahead: usize) -> String {
    match ahead {
        0 => "Queued: yours is next. (Reply `!cancel` to this message to drop it.)".to_owned(),
        1 => "Queued: 1 request is ahead of yours. (Reply `!cancel` to this message to drop it.)".to_owned(),
        n => format!("Queued: {n} requests are ahead of yours. (Reply `!cancel` to this message to drop it.)"),
    }
}

pub fn job_started() -> String {
    "Working on it now…".to_owned()
}

pub fn job_done() -> String {
    "Done.".to_owned()
}

pub fn job_cancelled(by: Option<&str>) -> String {
    match by {
        Some(by) => format!("Cancelled by {by}."),
        None => "Cancelled.".to_owned(),
    }
}

/// A job failed and its reply says why.
pub fn job_failed_told() -> String {
    "Failed: see my reply.".to_owned()
}

/// A job failed where nothing was said yet (the details are in the agent's log).
pub fn job_failed() -> String {
    "Sorry, this failed on my side: the homeserver or my database did not answer in time. Please ask again in \
     a while."
        .to_owned()
}

pub fn job_interrupted() -> String {
    "I was interrupted several times while working on this (restarts), so I gave up. Please ask again.".to_owned()
}

/// One line of `!jobs`.
pub struct JobLine {
    pub label: String,
    pub kind: String,
    pub who: String,
    /// Since it started (running) or was asked (queued).
    pub since_secs: i64,
    /// Its place among this room's waiting jobs; `None` while it runs.
    pub position: Option<usize>,
}

pub fn jobs_listed(jobs: &[JobLine]) -> String {
    if jobs.is_empty() {
        return "Nothing is waiting or running in this room.".to_owned();
    }
    let mut text = String::from("**Waiting or running in this room**\n");
    for job in jobs {
        let label = plain(&job.label);
        let since = duration(job.since_secs);
        let state = match job.position {
            None => format!("running for {since}"),
            Some(n) => format!("waiting ({} in line here) for {since}", ordinal(n)),
        };
        text.push_str(&format!("- {label} — {} for {}, {state}\n", job.kind, plain(&job.who)));
    }
    text.push_str("\nReply `!cancel` to a request (or to my message about it) to stop it.");
    text
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 90 => format!("{s} s"),
        s if s < 5400 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

pub fn cancelling(label: &str) -> String {
    format!("Cancelling: {}.", plain(label))
}

pub fn cancel_no_job_there() -> String {
    "The message you replied to has no request of mine that I could cancel.".to_owned()
}

pub fn cancel_nothing_of_yours() -> String {
    "You have nothing waiting or running in this room. (`!jobs` lists what there is.)".to_owned()
}

pub fn cancel_already_over(label: &str, state: &str) -> String {
    format!("That one is over already ({state}): {}.", plain(label))
}

pub fn cancel_not_yours(owner: &str) -> String {
    format!("Only {} or an admin can cancel that one.", plain(owner))
}

pub fn room_queue_full(max: usize) -> String {
    format!(
        "This room already has {max} requests waiting or running, which is as many as I take. Please wait for \
         some to finish (`!jobs` lists them; `!cancel` drops yours)."
    )
}

pub fn user_queue_full(max: usize) -> String {
    format!(
        "You already have {max} requests waiting or running, which is as many as I take from one person. Please \
         wait for some to finish (`!jobs` lists them; `!cancel` drops yours)."
    )
}

pub fn answered_by_fallback(model: &str) -> String {
    format!("\n\n_(answered by the fallback model {}: the main model server is not answering)_", code(model))
}

// ---- Planka: `!task` and `!board` ----

pub fn planka_not_configured() -> String {
    "Planka is not configured: an operator can set `planka.url` and `planka.api_key` (or `planka.username` \
     and `planka.password`) in my configuration."
        .to_owned()
}

/// A Planka call failed; `error` already names Planka and the cause.
pub fn planka_failed(error: &str) -> String {
    format!("That did not work: {error}. Try again later, or ask an operator to check Planka.")
}

pub fn task_needs_a_title() -> String {
    "`!task` needs a title, e.g. `!task Fix the login redirect`".to_owned()
}

pub fn task_title_too_long(max: usize) -> String {
    format!("a card title can be at most {max} characters; put the details in a reply or a comment")
}

pub fn task_usage(sub: &str) -> String {
    match sub {
        "show" => "usage: `!task show <card>` (or reply to my message about the card with `!task show`)",
        "done" => "usage: `!task done <card>` (or reply to my message about the card with `!task done`)",
        "move" => "usage: `!task move <card> <list>` (or reply to my message about the card with `!task move <list>`)",
        "comment" => "usage: `!task comment <card> <text>` (or reply to my message about the card)",
        _ => "usage: `!task assign <card> <planka username or @matrix:user>`",
    }
    .to_owned()
}

pub fn board_bind_usage() -> String {
    "usage: `!board` shows this room's board; `!board bind <board id | \"Project/Board\"> [list]` binds one".to_owned()
}

pub fn unbalanced_quotes() -> String {
    "a quoted name is missing its closing `\"`".to_owned()
}

pub fn board_unbound() -> String {
    "This room has no Planka board yet. An admin can bind one with `!board bind \"Project/Board\"` \
     (or the board id), optionally followed by the list new cards go to."
        .to_owned()
}

pub fn bind_admins_only() -> String {
    "Only admins can bind a board to a room. An operator can add you to `access.admins` in my configuration.".to_owned()
}

/// Text from outside (Planka names, other people's messages, user input) shown as itself inside
/// Markdown: a card named `[x](http://…)` must not become a link, nor a quoted `@room` notify
/// everyone.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\`*_[]()<>#!|~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.replace("@room", "@\u{200b}room")
}

pub fn board_shown(board: &str, url: &str, list: &str) -> String {
    let board = plain(board);
    let list = plain(list);
    format!("This room's board is **{board}** ({url}); new cards go to “{list}”.")
}

pub fn board_bound(board: &str, url: &str, list: &str) -> String {
    let board = plain(board);
    let list = plain(list);
    format!("Bound this room to **{board}** ({url}); new cards go to “{list}”. Try `!task <title>`.")
}

pub fn board_not_found(wanted: &str, boards: &[String]) -> String {
    let wanted = plain(wanted);
    let mut text = format!("I cannot find the board “{wanted}” in Planka.");
    if boards.is_empty() {
        text.push_str(" I see no boards at all: the agent's Planka user must be a member of the board.");
    } else {
        text.push_str(&format!(" Boards I can see: {}.", quote_all(boards)));
    }
    text
}

pub fn board_has_no_lists(board: &str) -> String {
    let board = plain(board);
    format!("The board **{board}** has no lists yet. Add one in Planka, then bind again.")
}

pub fn list_not_found(wanted: &str, lists: &[String]) -> String {
    let wanted = plain(wanted);
    format!("There is no list “{wanted}” on this room's board. Lists: {}.", quote_all(lists))
}

pub fn no_done_list(lists: &[String]) -> String {
    format!(
        "This room's board has no closed list and no list named Done, so I do not know where done cards go. \
         Lists: {}. Use `!task move <card> <list>`.",
        quote_all(lists)
    )
}

/// `wanted` arrives formatted (a code span) by the caller.
pub fn card_unknown(wanted: &str, recent: &[String]) -> String {
    let mut text = format!("I do not know the card {wanted} in this room.");
    if recent.is_empty() {
        text.push_str(" `!task list` shows the cards on this room's board with their references.");
    } else {
        text.push_str(&format!(" Recent cards here: {}. `!task list` shows all of them.", recent.join(", ")));
    }
    text
}

pub fn card_needed() -> String {
    "Which card? Name it (`#12`, its id or its link), or reply to my message about it.".to_owned()
}

pub fn card_on_another_board() -> String {
    "That card is not on this room's board, so I will not touch it from here.".to_owned()
}

pub fn card_created(reference: i64, title: &str, url: &str) -> String {
    let title = plain(title);
    format!("Created `#{reference}` **{title}** in Planka: {url}")
}

pub fn card_line(reference: i64, title: &str, closed: bool) -> String {
    let title = plain(title);
    format!("`#{reference}` {title}{}", if closed { " (closed)" } else { "" })
}

pub fn card_shown(
    reference: i64,
    title: &str,
    list: &str,
    closed: bool,
    description: Option<&str>,
    url: &str,
) -> String {
    let list = plain(list);
    let title = plain(title);
    let mut text = format!("`#{reference}` **{title}** — in “{list}”{} — {url}", if closed { ", closed" } else { "" });
    if let Some(d) = description.map(str::trim).filter(|d| !d.is_empty()) {
        let short: String = d.chars().take(300).collect();
        text.push_str(&format!("\n\n{short}{}", if short.len() < d.len() { "…" } else { "" }));
    }
    text
}

/// `lists`: each list's name and its cards, already formatted with [`card_line`].
pub fn cards_listed(lists: &[(String, Vec<String>)], more: usize) -> String {
    let mut text = String::new();
    for (name, cards) in lists {
        text.push_str(&format!("**{name}**\n"));
        if cards.is_empty() {
            text.push_str("- (no cards)\n");
        }
        for card in cards {
            text.push_str(&format!("- {card}\n"));
        }
    }
    if more > 0 {
        text.push_str(&format!("…and {more} more; `!task list <list>` shows one list.\n"));
    }
    text.trim_end().to_owned()
}

pub fn card_moved(reference: i64, title: &str, list: &str) -> String {
    let list = plain(list);
    let title = plain(title);
    format!("Moved `#{reference}` **{title}** to “{list}”.")
}

pub fn card_done(reference: i64, title: &str, list: &str) -> String {
    let list = plain(list);
    let title = plain(title);
    format!("Done: `#{reference}` **{title}** is now in “{list}”.")
}

pub fn card_commented(reference: i64, title: &str) -> String {
    let title = plain(title);
    format!("Commented on `#{reference}` **{title}**.")
}

pub fn card_assigned(reference: i64, title: &str, username: &str) -> String {
    let title = plain(title);
    let username = plain(username);
    format!("Assigned `#{reference}` **{title}** to {username}.")
}

pub fn planka_user_unknown(wanted: &str, usernames: &[String]) -> String {
    let wanted = plain(wanted);
    format!(
        "No member of this room's board has the Planka username “{wanted}”. Members: {}.",
        if usernames.is_empty() { "none".to_owned() } else { quote_all(usernames) }
    )
}

/// A comment written into Planka for someone in Matrix.
pub fn planka_comment(text: &str, sender: &str) -> String {
    format!("{text}\n\n— {sender} (from Matrix)")
}

/// The description of a card made from a replied-to message.
pub fn card_description(quoted: &str, sender: &str, permalink: &str) -> String {
    format!("{quoted}\n\n— {sender} in Matrix: {permalink}")
}

/// A Planka change told to a bound room (plain text: names are user data).
pub fn planka_notice(text: &str, card_url: Option<&str>) -> String {
    match card_url {
        Some(url) => format!("Planka: {text} — {url}"),
        None => format!("Planka: {text}"),
    }
}

fn quote_all(names: &[String]) -> String {
    names.iter().map(|n| format!("“{}”", plain(n))).collect::<Vec<_>>().join(", ")
}

/// One `!search` result.
pub struct SearchResult {
    /// The room's name or id, when the results come from several rooms.
    pub room: Option<String>,
    pub sender: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub snippet: String,
    pub permalink: String,
}

/// Which of the asker's rooms `!search --all` looked at.
pub struct Coverage {
    pub searched: usize,
    /// Rooms left out because the homeserver could not say whether the asker is in them.
    pub unchecked: usize,
    /// Rooms beyond `cap`, the most one search considers.
    pub not_considered: usize,
    pub cap: usize,
}

pub fn search_needs_a_query() -> String {
    "`!search` needs something to look for, e.g. `!search login page decision` \
     (or `!search --all …` for every room you and I are both in)"
        .to_owned()
}

/// Found messages are other people's words: shown as escaped quotes, so they cannot format the
/// reply or mention anyone.
pub fn search_results(results: &[SearchResult]) -> String {
    result_lines("**Earlier in this room:**", results)
}

pub fn search_all_results(results: &[SearchResult], coverage: &Coverage) -> String {
    let heading = format!("**Earlier in your rooms** ({} searched):", rooms(coverage.searched));
    result_lines(&heading, results) + &coverage_notes(coverage)
}

fn result_lines(heading: &str, results: &[SearchResult]) -> String {
    let mut text = heading.to_owned();
    for r in results {
        let room = r.room.as_deref().map(|room| format!("**{}** — ", plain(room))).unwrap_or_default();
        text.push_str(&format!(
            "\n- {room}{} on {}: “{}” — [link]({})",
            plain(&r.sender),
            r.date,
            plain(&r.snippet.split_whitespace().collect::<Vec<_>>().join(" ")),
            r.permalink
        ));
    }
    text
}

fn rooms(n: usize) -> String {
    if n == 1 { "1 room".to_owned() } else { format!("{n} rooms") }
}

/// Says which rooms were not searched, so a partial answer never looks complete.
fn coverage_notes(coverage: &Coverage) -> String {
    let mut notes = String::new();
    if coverage.unchecked > 0 {
        notes.push_str(&format!(
            "\n\n_({} left out: the homeserver could not tell me whether you are in {}.)_",
            rooms(coverage.unchecked),
            if coverage.unchecked == 1 { "it" } else { "them" }
        ));
    }
    if coverage.not_considered > 0 {
        notes.push_str(&format!(
            "\n\n_(I search at most {} at once: {} more of mine {} skipped.)_",
            rooms(coverage.cap),
            coverage.not_considered,
            if coverage.not_considered == 1 { "was" } else { "were" }
        ));
    }
    notes
}

pub fn index_usage() -> String {
    "use `!index`, `!index status`, `!index on`, `!index off` or `!index backfill`".to_owned()
}

/// What `!index status` reports about a room.
pub struct IndexStatus {
    pub on: bool,
    /// Records of the room in Chroma, or why they cannot be counted.
    pub stored: Result<u64, String>,
    pub backlog: i64,
    /// Messages given up on after repeated refusals.
    pub failed: i64,
    pub backfill: Option<crate::store::Backfill>,
}

pub fn index_status(s: &IndexStatus) -> String {
    let state = if s.on { "on: new messages here are kept for `!search`" } else { "off: nothing new here is kept" };
    let stored = match &s.stored {
        Ok(n) => n.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    let mut text = format!("Indexing is {state}.\n- stored: {stored}\n- waiting to be indexed: {}", s.backlog);
    if s.failed > 0 {
        text.push_str(&format!("\n- given up on (refused by the embedder or Chroma): {}", s.failed));
    }
    if let Some(b) = &s.backfill {
        let progress = format!("{} events read, {} messages queued", b.fetched, b.queued);
        let state = match (b.done, &b.error) {
            (false, None) => "reading".to_owned(),
            (false, Some(e)) => format!("waiting to retry ({})", plain(e)),
            (true, None) => "finished".to_owned(),
            (true, Some(e)) => format!("stopped: {}", plain(e)),
        };
        text.push_str(&format!("\n- earlier history: {state}; {progress} (limit {})", b.max_events));
    }
    text
}

pub fn backfill_started(max_events: i64) -> String {
    format!(
        "Reading this room's earlier history into the index (up to {max_events} events, newest first). \
         `!index status` shows how far it got."
    )
}

pub fn backfill_running(b: &crate::store::Backfill) -> String {
    format!(
        "I am already reading this room's history: {} events read, {} messages queued. `!index status` shows \
         how far it got.",
        b.fetched, b.queued
    )
}

pub fn backfill_needs_indexing() -> String {
    "Indexing is off in this room, so there is nothing to read history into. `!index on` first.".to_owned()
}

pub fn index_switched(on: bool) -> String {
    if on {
        "Indexing is on: new messages in this room will be found by `!search`.".to_owned()
    } else {
        "Indexing is off: new messages in this room are no longer kept for `!search` (what is already \
         kept stays; redacting a message removes it)."
            .to_owned()
    }
}

pub fn search_found_nothing() -> String {
    "I found nothing about that in this room's history (only messages since indexing started are searched).".to_owned()
}

pub fn search_all_found_nothing(coverage: &Coverage) -> String {
    format!(
        "I found nothing about that in the {} you and I are both in (only messages since indexing \
         started are searched).{}",
        rooms(coverage.searched),
        coverage_notes(coverage)
    )
}

/// `!search --all` could not learn which rooms the asker is in, so it searched none.
pub fn search_all_unreachable(error: &str) -> String {
    format!(
        "I cannot search your rooms right now: I could not ask the homeserver which rooms you are in \
         ({error}). Try again later; `!search <query>` still searches this room."
    )
}

pub fn search_visibility_unknown(error: &str) -> String {
    format!(
        "I cannot search this room right now: I could not ask the homeserver which of its messages you may \
         read ({error}). Try again later."
    )
}

pub fn search_failed(error: &str) -> String {
    format!(
        "I cannot search right now: {error}. Try again later; an operator can check the embeddings server and Chroma."
    )
}

/// `YYYY-MM-DD` (UTC), without a date crate: civil-from-days.
pub fn today_utc() -> String {
    date_utc(crate::store::now_ms())
}

/// `YYYY-MM-DD` of a time in Unix milliseconds, UTC (the civil calendar, without a date crate).
pub fn date_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_the_backends_the_queues_uptime_and_version() {
        let lines = ["llm down 7 ms the model server cannot be reached".to_owned()];
        let queues =
            Queues { inbox: 2, jobs: vec![("chat".into(), "queued".into(), 3)], index_backlog: 4, dead_letters: 1 };
        let text = status(&lines, Some(&queues), std::time::Duration::from_secs(30));
        assert!(text.contains("- `llm down 7 ms the model server cannot be reached`"), "{text}");
        assert!(text.contains("inbox 2, jobs chat 3 queued, index backlog 4, dead letters 1"), "{text}");
        assert!(text.contains(env!("CARGO_PKG_VERSION")) && text.contains("up 30 s"), "{text}");
        assert!(status(&lines, None, std::time::Duration::ZERO).contains("Queues: unknown"));
    }

    #[test]
    fn outside_text_cannot_format_or_link() {
        assert_eq!(plain("[x](http://evil) *b* `c` #1"), r"\[x\]\(http://evil\) \*b\* \`c\` \#1");
        assert_eq!(plain("plain words, 100%"), "plain words, 100%");
        assert!(card_created(3, "**boom**", "http://p/cards/1").contains(r"\*\*boom\*\*"));
        assert!(list_not_found("x", &["[a](b)".into()]).contains(r"“\[a\]\(b\)”"));
    }

    #[test]
    fn search_results_cannot_format_or_mention() {
        let result = SearchResult {
            room: None,
            sender: "@alice:x.y".into(),
            date: "2026-11-22".into(),
            snippet: "**bold** [click](https://evil)\n!ping @room".into(),
            permalink: "https://matrix.to/#/!r/$e".into(),
        };
        let text = search_results(&[result]);
        assert_eq!(text.lines().count(), 2, "one line per result: {text}");
        assert!(text.contains(r"\*\*bold\*\* \[click\]\(https://evil\) \!ping @"), "{text}");
        assert!(!text.contains("@room"), "{text}");
        assert!(text.ends_with("— [link](https://matrix.to/#/!r/$e)"), "{text}");
    }

    #[test]
    fn results_from_several_rooms_name_their_room_and_what_was_left_out() {
        let result = |room: &str| SearchResult {
            room: Some(room.into()),
            sender: "@bob:x.y".into(),
            date: "2026-11-22".into(),
            snippet: "the disk is full".into(),
            permalink: "https://matrix.to/#/!r/$e".into(),
        };
        let full = Coverage { searched: 2, unchecked: 0, not_considered: 0, cap: 200 };
        let text = search_all_results(&[result("[Ops](https://evil) @room"), result("!abc:x.y")], &full);
        assert_eq!(text.lines().count(), 3, "a heading and one line per result: {text}");
        assert!(text.starts_with("**Earlier in your rooms** (2 rooms searched):"), "{text}");
        assert!(text.contains(r"- **\[Ops\]\(https://evil\) @"), "room names are escaped: {text}");
        assert!(!text.contains("@room"), "{text}");
        assert!(text.contains(r"- **\!abc:x.y** — @bob:x.y on 2026-11-22"), "{text}");

        let partial = Coverage { searched: 1, unchecked: 1, not_considered: 3, cap: 200 };
        let text = search_all_found_nothing(&partial);
        assert!(text.contains("in the 1 room you and I"), "{text}");
        assert!(text.contains("1 room left out") && text.contains("in it"), "{text}");
        assert!(text.contains("at most 200 rooms") && text.contains("3 more of mine were skipped"), "{text}");
        assert!(!search_all_results(&[], &full).contains("_("), "nothing to say when all was searched");
    }

    #[test]
    fn dates_are_civil() {
        let d = today_utc();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"), "{d}");
        assert_eq!(date_utc(1_732_200_000_000), "2024-11-21");
        assert_eq!(date_utc(0), "1970-01-01");
    }
}
