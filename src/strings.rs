//! Every text the agent shows to people, in one place, so wording stays consistent and tests can
//! refer to it.
//!
//! Messages are [`Md`]: the agent's words as literals, and every value from outside (command
//! arguments, names from Planka or the model server, error reasons, user ids) put in through
//! [`md!`], which escapes text, or as [`Md::code`], [`Md::url`] or [`Md::quote`]. The few texts
//! that are not the agent's Markdown (plain-text messages, what is written into Planka) are
//! `String`, at the end.

use crate::matrix::markdown::{Md, md};

/// `!help`: the commands that exist today.
pub fn help() -> Md {
    Md::lit(
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
     - `!board` — this room's Planka board; `!board bind <board id | \"Project/Board\"> [list]` binds one (admins)",
    )
}

/// The queue depths `!status` shows.
pub struct Queues {
    pub inbox: i64,
    /// (kind, state, count) of the jobs not yet over.
    pub jobs: Vec<(String, String, i64)>,
    pub index_backlog: i64,
    pub dead_letters: i64,
}

/// `!status`: one line per backend (`probe::Report::line`, as code), the queues, uptime, version.
pub fn status(lines: &[String], queues: Option<&Queues>, uptime: std::time::Duration) -> Md {
    let mut text = md!(
        "**Status** — conclave-agent {}, up {}\n",
        Md::lit(env!("CARGO_PKG_VERSION")),
        duration(i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX))
    );
    for line in lines {
        text.push(&md!("- {}\n", Md::code(line)));
    }
    match queues {
        Some(q) => {
            let jobs = if q.jobs.is_empty() {
                Md::lit("none")
            } else {
                Md::join(q.jobs.iter().map(|(kind, state, n)| md!("{} {} {}", kind, n, state)), ", ")
            };
            text.push(&md!(
                "\nQueues: inbox {}, jobs {}, index backlog {}, dead letters {}",
                q.inbox,
                jobs,
                q.index_backlog,
                q.dead_letters
            ));
        }
        None => text.push_lit("\nQueues: unknown (the database does not answer)"),
    }
    text
}

pub fn pong(lag_ms: Option<i64>) -> Md {
    match lag_ms {
        Some(ms) => md!("pong ({} ms from your message to my answer)", ms),
        None => Md::lit("pong"),
    }
}

/// `name` is the command's name as written (letters, digits, `-`, `_`).
pub fn unknown_command(name: &str) -> Md {
    md!("I don't know {}. Type `!help` for the commands I understand.", Md::code(&format!("!{name}")))
}

/// `reason` is one of the usage texts here.
pub fn invalid_command(reason: &Md) -> Md {
    md!("{} — type `!help` for usage.", reason)
}

pub fn takes_no_arguments(name: &str) -> Md {
    md!("{} takes no arguments", Md::code(&format!("!{name}")))
}

pub fn not_allowed() -> Md {
    Md::lit(
        "You are not allowed to give me commands here. An operator can add you to `access.users` in my configuration.",
    )
}

pub fn encrypted_room_notice() -> Md {
    Md::lit(
        "This room is end-to-end encrypted, and I cannot read encrypted messages yet, so I will not see \
     commands or questions sent here. Talk to me in an unencrypted room for now.",
    )
}

pub fn planka_notices_encrypted_room() -> Md {
    Md::lit(
        "This room turned on end-to-end encryption, and I cannot encrypt messages yet, so I will not post \
     updates of its Planka board here. Bind the board in an unencrypted room (`!board bind`) to follow it there.",
    )
}

pub fn browse_usage() -> Md {
    Md::lit("`!browse` needs a link, e.g. `!browse https://example.org/changelog what changed in 2.0?`")
}

/// `!browse`'s status while the page loads: the link as asked (normalised when it parses).
pub fn browse_loading(url: &str) -> Md {
    md!("Opening {} …", Md::url(url))
}

/// `!browse`'s status once the page is there and the model reads it; the title is the page's.
pub fn browse_reading(title: &str) -> Md {
    md!("Loaded “{}”; reading it…", title)
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
/// do when there is something. The URL is text, not a link: it did not open.
pub fn browse_failed(url: &str, what: &str, hint: BrowseHint) -> Md {
    let hint = match hint {
        BrowseHint::Blocked => {
            " I never open local, private or cloud-metadata addresses (an admin can allow a host with \
             `browser.allow_hosts`)."
        }
        BrowseHint::Retry => " Try again in a while.",
        BrowseHint::CheckLink => " Check the link.",
        BrowseHint::None => "",
    };
    md!("I could not open {}: {}.{}", url, what, Md::lit(hint))
}

pub fn ask_needs_a_question() -> Md {
    Md::lit("`!ask` needs a question, e.g. `!ask what did we decide about the login page?`")
}

/// Names from outside (models) as code spans: a backtick in one cannot end its span.
fn code_list(names: &[String]) -> Md {
    Md::join(names.iter().map(|n| Md::code(n)), ", ")
}

/// The model could not be asked at all.
pub fn llm_failed(error: &str, available: Option<&[String]>) -> Md {
    let mut text = md!("I could not answer: {}.", error);
    match available {
        Some(models) if !models.is_empty() => {
            text.push(&md!(" Models on that server: {}.", code_list(models)));
            text.push_lit(" An operator can set `llm.chat_model`.");
        }
        _ => text.push_lit(" Check that the model server is running, then ask again."),
    }
    text
}

/// Appended to an answer whose stream broke off.
pub fn answer_cut(error: &str) -> Md {
    md!("\n\n_(my answer was cut off: {})_", error)
}

pub fn question_cut() -> Md {
    Md::lit("\n\n_(your message was very long: I read only its beginning)_")
}

pub fn answer_cancelled() -> Md {
    Md::lit("\n\n_(cancelled)_")
}

pub fn empty_answer() -> Md {
    Md::lit("The model returned an empty answer. Try rephrasing the question.")
}

pub fn model_usage() -> Md {
    Md::lit("`!model` takes one model name (or none, to list them)")
}

/// `what` someone who is not an admin may not do.
pub fn admins_only(what: &'static str) -> Md {
    md!("Only admins can {}. An operator can add you to `access.admins`.", Md::lit(what))
}

pub fn models(current: &str, available: Result<&[String], String>) -> Md {
    let mut text = md!("This room uses {}.", Md::code(current));
    match available {
        Ok(models) => text.push(&md!(" Available: {}.", code_list(models))),
        Err(e) => text.push(&md!(" I cannot list the others: {}.", e)),
    }
    text
}

pub fn model_set(model: &str) -> Md {
    md!("This room now uses {}.", Md::code(model))
}

pub fn model_reset(default: &str) -> Md {
    md!("This room uses the default model again, {}.", Md::code(default))
}

pub fn unknown_model(model: &str, available: &[String]) -> Md {
    md!("There is no model {} on the model server. Available: {}.", Md::code(model), code_list(available))
}

pub fn cannot_check_model(error: &str) -> Md {
    md!("I cannot check the model right now: {}. Try again when the model server is up.", error)
}

/// The instructions as the model gets them: quoted line by line, each shown as itself.
pub fn prompt_shown(prompt: &str, custom: bool) -> Md {
    let whose = if custom { "This room's instructions" } else { "The default instructions (no room-specific ones)" };
    md!("{}:\n\n{}", Md::lit(whose), Md::quote(prompt))
}

pub fn prompt_set() -> Md {
    Md::lit("Saved: I will follow these instructions in this room.")
}

pub fn prompt_reset() -> Md {
    Md::lit("This room uses the default instructions again.")
}

pub fn usage(room: [(i64, i64, i64); 2], user: [(i64, i64, i64); 2]) -> Md {
    let line = |(requests, prompt, completion): (i64, i64, i64)| {
        md!("{} answers, {} prompt + {} answer tokens", requests, prompt, completion)
    };
    md!(
        "**Token use**\n- this room: today {}; last 30 days {}\n- you (all rooms): today {}; last 30 days {}",
        line(room[0]),
        line(room[1]),
        line(user[0]),
        line(user[1])
    )
}

pub fn commands_too_fast(per_minute: u32) -> Md {
    md!(
        "You are sending me commands faster than {} a minute, so I am ignoring the rest for now. Give it a minute.",
        per_minute
    )
}

pub fn rate_limited(per_minute: u32) -> Md {
    md!("You have asked {} questions in the last minute; please wait a moment before the next one.", per_minute)
}

// ---- Jobs: slow work that waits its turn ----

/// The status of a job that waits: `ahead` jobs start before it.
pub fn job_queued(ahead: usize) -> Md {
    match ahead {
        0 => Md::lit("Queued: yours is next. (Reply `!cancel` to this message to drop it.)"),
        1 => Md::lit("Queued: 1 request is ahead of yours. (Reply `!cancel` to this message to drop it.)"),
        n => md!("Queued: {} requests are ahead of yours. (Reply `!cancel` to this message to drop it.)", n),
    }
}

pub fn job_started() -> Md {
    Md::lit("Working on it now…")
}

pub fn job_done() -> Md {
    Md::lit("Done.")
}

/// `by`: the user id of who cancelled it.
pub fn job_cancelled(by: Option<&str>) -> Md {
    match by {
        Some(by) => md!("Cancelled by {}.", by),
        None => Md::lit("Cancelled."),
    }
}

/// A job failed and its reply says why.
pub fn job_failed_told() -> Md {
    Md::lit("Failed: see my reply.")
}

/// A job failed where nothing was said yet (the details are in the agent's log).
pub fn job_failed() -> Md {
    Md::lit(
        "Sorry, this failed on my side: the homeserver or my database did not answer in time. Please ask again in \
     a while.",
    )
}

pub fn job_interrupted() -> Md {
    Md::lit("I was interrupted several times while working on this (restarts), so I gave up. Please ask again.")
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

pub fn jobs_listed(jobs: &[JobLine]) -> Md {
    if jobs.is_empty() {
        return Md::lit("Nothing is waiting or running in this room.");
    }
    let mut text = Md::lit("**Waiting or running in this room**\n");
    for job in jobs {
        let since = duration(job.since_secs);
        let state = match job.position {
            None => md!("running for {}", since),
            Some(n) => md!("waiting ({} in line here) for {}", ordinal(n), since),
        };
        text.push(&md!("- {} — {} for {}, {}\n", job.label, job.kind, job.who, state));
    }
    text.push_lit("\nReply `!cancel` to a request (or to my message about it) to stop it.");
    text
}

fn ordinal(n: usize) -> Md {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    md!("{}{}", n, Md::lit(suffix))
}

fn duration(secs: i64) -> Md {
    match secs {
        s if s < 90 => md!("{} s", s),
        s if s < 5400 => md!("{} min", s / 60),
        s => md!("{} h", s / 3600),
    }
}

pub fn cancelling(label: &str) -> Md {
    md!("Cancelling: {}.", label)
}

pub fn cancel_no_job_there() -> Md {
    Md::lit("The message you replied to has no request of mine that I could cancel.")
}

pub fn cancel_nothing_of_yours() -> Md {
    Md::lit("You have nothing waiting or running in this room. (`!jobs` lists what there is.)")
}

pub fn cancel_already_over(label: &str, state: &str) -> Md {
    md!("That one is over already ({}): {}.", state, label)
}

pub fn cancel_not_yours(owner: &str) -> Md {
    md!("Only {} or an admin can cancel that one.", owner)
}

pub fn room_queue_full(max: usize) -> Md {
    md!(
        "This room already has {} requests waiting or running, which is as many as I take. Please wait for \
         some to finish (`!jobs` lists them; `!cancel` drops yours).",
        max
    )
}

pub fn user_queue_full(max: usize) -> Md {
    md!(
        "You already have {} requests waiting or running, which is as many as I take from one person. Please \
         wait for some to finish (`!jobs` lists them; `!cancel` drops yours).",
        max
    )
}

pub fn answered_by_fallback(model: &str) -> Md {
    md!("\n\n_(answered by the fallback model {}: the main model server is not answering)_", Md::code(model))
}

// ---- Planka: `!task` and `!board` ----

pub fn planka_not_configured() -> Md {
    Md::lit(
        "Planka is not configured: an operator can set `planka.url` and `planka.api_key` (or `planka.username` \
     and `planka.password`) in my configuration.",
    )
}

/// A Planka call failed; `error` already names Planka and the cause.
pub fn planka_failed(error: &str) -> Md {
    md!("That did not work: {}. Try again later, or ask an operator to check Planka.", error)
}

pub fn task_needs_a_title() -> Md {
    Md::lit("`!task` needs a title, e.g. `!task Fix the login redirect`")
}

pub fn task_title_too_long(max: usize) -> Md {
    md!("a card title can be at most {} characters; put the details in a reply or a comment", max)
}

pub fn task_usage(sub: &str) -> Md {
    Md::lit(match sub {
        "show" => "usage: `!task show <card>` (or reply to my message about the card with `!task show`)",
        "done" => "usage: `!task done <card>` (or reply to my message about the card with `!task done`)",
        "move" => "usage: `!task move <card> <list>` (or reply to my message about the card with `!task move <list>`)",
        "comment" => "usage: `!task comment <card> <text>` (or reply to my message about the card)",
        _ => "usage: `!task assign <card> <planka username or @matrix:user>`",
    })
}

pub fn board_bind_usage() -> Md {
    Md::lit("usage: `!board` shows this room's board; `!board bind <board id | \"Project/Board\"> [list]` binds one")
}

pub fn unbalanced_quotes() -> Md {
    Md::lit("a quoted name is missing its closing `\"`")
}

pub fn board_unbound() -> Md {
    Md::lit(
        "This room has no Planka board yet. An admin can bind one with `!board bind \"Project/Board\"` \
     (or the board id), optionally followed by the list new cards go to.",
    )
}

pub fn bind_admins_only() -> Md {
    Md::lit("Only admins can bind a board to a room. An operator can add you to `access.admins` in my configuration.")
}

/// A card as this room refers to it: `#12` as code.
pub fn card_ref(reference: i64) -> Md {
    Md::code(&format!("#{reference}"))
}

pub fn board_shown(board: &str, url: &str, list: &str) -> Md {
    md!("This room's board is **{}** ({}); new cards go to “{}”.", board, Md::url(url), list)
}

pub fn board_bound(board: &str, url: &str, list: &str) -> Md {
    md!("Bound this room to **{}** ({}); new cards go to “{}”. Try `!task <title>`.", board, Md::url(url), list)
}

pub fn board_not_found(wanted: &str, boards: &[String]) -> Md {
    let mut text = md!("I cannot find the board “{}” in Planka.", wanted);
    if boards.is_empty() {
        text.push_lit(" I see no boards at all: the agent's Planka user must be a member of the board.");
    } else {
        text.push(&md!(" Boards I can see: {}.", quote_all(boards)));
    }
    text
}

pub fn board_has_no_lists(board: &str) -> Md {
    md!("The board **{}** has no lists yet. Add one in Planka, then bind again.", board)
}

pub fn list_not_found(wanted: &str, lists: &[String]) -> Md {
    md!("There is no list “{}” on this room's board. Lists: {}.", wanted, quote_all(lists))
}

pub fn no_done_list(lists: &[String]) -> Md {
    md!(
        "This room's board has no closed list and no list named Done, so I do not know where done cards go. \
         Lists: {}. Use `!task move <card> <list>`.",
        quote_all(lists)
    )
}

/// `wanted`: the card as it was named ([`card_ref`], or [`Md::code`] of an id); `recent`: the
/// references of the room's recent cards.
pub fn card_unknown(wanted: &Md, recent: &[i64]) -> Md {
    let mut text = md!("I do not know the card {} in this room.", wanted);
    if recent.is_empty() {
        text.push_lit(" `!task list` shows the cards on this room's board with their references.");
    } else {
        let recent = Md::join(recent.iter().map(|&r| card_ref(r)), ", ");
        text.push(&md!(" Recent cards here: {}. `!task list` shows all of them.", recent));
    }
    text
}

pub fn card_needed() -> Md {
    Md::lit("Which card? Name it (`#12`, its id or its link), or reply to my message about it.")
}

pub fn card_on_another_board() -> Md {
    Md::lit("That card is not on this room's board, so I will not touch it from here.")
}

pub fn card_created(reference: i64, title: &str, url: &str) -> Md {
    md!("Created {} **{}** in Planka: {}", card_ref(reference), title, Md::url(url))
}

pub fn card_line(reference: i64, title: &str, closed: bool) -> Md {
    md!("{} {}{}", card_ref(reference), title, Md::lit(if closed { " (closed)" } else { "" }))
}

/// The card, and the beginning of its description (quoted: it is its authors' text).
pub fn card_shown(reference: i64, title: &str, list: &str, closed: bool, description: Option<&str>, url: &str) -> Md {
    let closed = Md::lit(if closed { ", closed" } else { "" });
    let mut text = md!("{} **{}** — in “{}”{} — {}", card_ref(reference), title, list, closed, Md::url(url));
    if let Some(d) = description.map(str::trim).filter(|d| !d.is_empty()) {
        let short: String = d.chars().take(300).collect();
        let cut = if short.len() < d.len() { "…" } else { "" };
        text.push(&md!("\n\n{}", Md::quote(&format!("{short}{cut}"))));
    }
    text
}

/// `lists`: each list's name and its cards, already formatted with [`card_line`].
pub fn cards_listed(lists: &[(String, Vec<Md>)], more: usize) -> Md {
    let mut lines = Vec::new();
    for (name, cards) in lists {
        lines.push(md!("**{}**", name));
        if cards.is_empty() {
            lines.push(Md::lit("- (no cards)"));
        }
        lines.extend(cards.iter().map(|card| md!("- {}", card)));
    }
    if more > 0 {
        lines.push(md!("…and {} more; `!task list <list>` shows one list.", more));
    }
    Md::join(lines, "\n")
}

pub fn card_moved(reference: i64, title: &str, list: &str) -> Md {
    md!("Moved {} **{}** to “{}”.", card_ref(reference), title, list)
}

pub fn card_done(reference: i64, title: &str, list: &str) -> Md {
    md!("Done: {} **{}** is now in “{}”.", card_ref(reference), title, list)
}

pub fn card_commented(reference: i64, title: &str) -> Md {
    md!("Commented on {} **{}**.", card_ref(reference), title)
}

pub fn card_assigned(reference: i64, title: &str, username: &str) -> Md {
    md!("Assigned {} **{}** to {}.", card_ref(reference), title, username)
}

pub fn planka_user_unknown(wanted: &str, usernames: &[String]) -> Md {
    let members = if usernames.is_empty() { Md::lit("none") } else { quote_all(usernames) };
    md!("No member of this room's board has the Planka username “{}”. Members: {}.", wanted, members)
}

fn quote_all(names: &[String]) -> Md {
    Md::join(names.iter().map(|n| md!("“{}”", n)), ", ")
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

pub fn search_needs_a_query() -> Md {
    Md::lit(
        "`!search` needs something to look for, e.g. `!search login page decision` \
     (or `!search --all …` for every room you and I are both in)",
    )
}

/// Found messages are other people's words: shown as escaped quotes, so they cannot format the
/// reply or mention anyone.
pub fn search_results(results: &[SearchResult]) -> Md {
    result_lines(Md::lit("**Earlier in this room:**"), results)
}

pub fn search_all_results(results: &[SearchResult], coverage: &Coverage) -> Md {
    let heading = md!("**Earlier in your rooms** ({} searched):", rooms(coverage.searched));
    let mut text = result_lines(heading, results);
    text.push(&coverage_notes(coverage));
    text
}

fn result_lines(heading: Md, results: &[SearchResult]) -> Md {
    let mut text = heading;
    for r in results {
        let room = r.room.as_deref().map(|room| md!("**{}** — ", room)).unwrap_or_default();
        let snippet = r.snippet.split_whitespace().collect::<Vec<_>>().join(" ");
        text.push(&md!("\n- {}{} on {}: “{}” — {}", room, r.sender, r.date, snippet, Md::link("link", &r.permalink)));
    }
    text
}

fn rooms(n: usize) -> Md {
    if n == 1 { Md::lit("1 room") } else { md!("{} rooms", n) }
}

/// Says which rooms were not searched, so a partial answer never looks complete.
fn coverage_notes(coverage: &Coverage) -> Md {
    let mut notes = Md::default();
    if coverage.unchecked > 0 {
        notes.push(&md!(
            "\n\n_({} left out: the homeserver could not tell me whether you are in {}.)_",
            rooms(coverage.unchecked),
            Md::lit(if coverage.unchecked == 1 { "it" } else { "them" })
        ));
    }
    if coverage.not_considered > 0 {
        notes.push(&md!(
            "\n\n_(I search at most {} at once: {} more of mine {} skipped.)_",
            rooms(coverage.cap),
            coverage.not_considered,
            Md::lit(if coverage.not_considered == 1 { "was" } else { "were" })
        ));
    }
    notes
}

pub fn index_usage() -> Md {
    Md::lit("use `!index`, `!index status`, `!index on`, `!index off` or `!index backfill`")
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

pub fn index_status(s: &IndexStatus) -> Md {
    let state = if s.on { "on: new messages here are kept for `!search`" } else { "off: nothing new here is kept" };
    let stored = match &s.stored {
        Ok(n) => md!("{}", *n),
        Err(e) => md!("unknown ({})", e),
    };
    let mut text = md!("Indexing is {}.\n- stored: {}\n- waiting to be indexed: {}", Md::lit(state), stored, s.backlog);
    if s.failed > 0 {
        text.push(&md!("\n- given up on (refused by the embedder or Chroma): {}", s.failed));
    }
    if let Some(b) = &s.backfill {
        let progress = md!("{} events read, {} messages queued", b.fetched, b.queued);
        let state = match (b.done, &b.error) {
            (false, None) => Md::lit("reading"),
            (false, Some(e)) => md!("waiting to retry ({})", e),
            (true, None) => Md::lit("finished"),
            (true, Some(e)) => md!("stopped: {}", e),
        };
        text.push(&md!("\n- earlier history: {}; {} (limit {})", state, progress, b.max_events));
    }
    text
}

pub fn backfill_started(max_events: i64) -> Md {
    md!(
        "Reading this room's earlier history into the index (up to {} events, newest first). \
         `!index status` shows how far it got.",
        max_events
    )
}

pub fn backfill_running(b: &crate::store::Backfill) -> Md {
    md!(
        "I am already reading this room's history: {} events read, {} messages queued. `!index status` shows \
         how far it got.",
        b.fetched,
        b.queued
    )
}

pub fn backfill_needs_indexing() -> Md {
    Md::lit("Indexing is off in this room, so there is nothing to read history into. `!index on` first.")
}

pub fn index_switched(on: bool) -> Md {
    Md::lit(if on {
        "Indexing is on: new messages in this room will be found by `!search`."
    } else {
        "Indexing is off: new messages in this room are no longer kept for `!search` (what is already \
         kept stays; redacting a message removes it)."
    })
}

pub fn search_found_nothing() -> Md {
    Md::lit("I found nothing about that in this room's history (only messages since indexing started are searched).")
}

pub fn search_all_found_nothing(coverage: &Coverage) -> Md {
    md!(
        "I found nothing about that in the {} you and I are both in (only messages since indexing \
         started are searched).{}",
        rooms(coverage.searched),
        coverage_notes(coverage)
    )
}

/// `!search --all` could not learn which rooms the asker is in, so it searched none.
pub fn search_all_unreachable(error: &str) -> Md {
    md!(
        "I cannot search your rooms right now: I could not ask the homeserver which rooms you are in \
         ({}). Try again later; `!search <query>` still searches this room.",
        error
    )
}

pub fn search_visibility_unknown(error: &str) -> Md {
    md!(
        "I cannot search this room right now: I could not ask the homeserver which of its messages you may \
         read ({}). Try again later.",
        error
    )
}

pub fn search_failed(error: &str) -> Md {
    md!(
        "I cannot search right now: {}. Try again later; an operator can check the embeddings server and Chroma.",
        error
    )
}

// ---- Not the agent's Markdown: plain-text messages, and text written into Planka ----

/// The alt text of `!browse`'s screenshot (plain text: `m.image` has no formatting).
pub fn browse_screenshot(title: &str, final_url: &str) -> String {
    let title = if title.trim().is_empty() { "(untitled page)" } else { title.trim() };
    format!("Screenshot of “{title}” — {final_url}")
}

/// A Planka change told to a bound room (sent as plain text: names are user data).
pub fn planka_notice(text: &str, card_url: Option<&str>) -> String {
    match card_url {
        Some(url) => format!("Planka: {text} — {url}"),
        None => format!("Planka: {text}"),
    }
}

/// A comment written into Planka for someone in Matrix: their words, in Planka's Markdown.
pub fn planka_comment(text: &str, sender: &str) -> String {
    format!("{text}\n\n— {sender} (from Matrix)")
}

/// The description of a card made from a replied-to message (in Planka, as the message said it).
pub fn card_description(quoted: &str, sender: &str, permalink: &str) -> String {
    format!("{quoted}\n\n— {sender} in Matrix: {permalink}")
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

    /// Outside text that would link, show an image, make code or emphasis, and notify the room.
    const HOSTILE: &str = "[x](https://evil) <img src=x onerror=alert(1)> `c` *e* @room";

    /// Asserts that `md` (holding [`HOSTILE`]) shows it as text: nothing of its making in the HTML.
    fn shows_hostile_as_text(md: &Md) {
        let html = crate::matrix::markdown::to_html(md).unwrap_or_default();
        for made in ["href=\"https://evil", "<img", "<code>c", "<em>e", "@room"] {
            assert!(!html.contains(made), "{made} in {html}");
        }
        assert!(html.contains("[x](https://evil) &lt;img src=x onerror=alert(1)&gt; `c` *e* @\u{200b}room"), "{html}");
    }

    #[test]
    fn outside_text_cannot_format_or_link() {
        assert_eq!(Md::text("[x](http://evil) *b* `c` #1").as_str(), r"\[x\]\(http://evil\) \*b\* \`c\` \#1");
        assert_eq!(Md::text("plain words, 100%").as_str(), "plain words, 100%");
        assert!(card_created(3, "**boom**", "http://p/cards/1").contains(r"\*\*boom\*\*"));
        assert!(list_not_found("x", &["[a](b)".into()]).contains(r"“\[a\]\(b\)”"));
        let url = "https://planka.example.org/cards/1";
        for md in [
            card_created(3, HOSTILE, url),
            card_line(3, HOSTILE, false),
            card_moved(3, HOSTILE, HOSTILE),
            card_done(3, "t", HOSTILE),
            card_commented(3, HOSTILE),
            card_assigned(3, "t", HOSTILE),
            board_shown(HOSTILE, url, HOSTILE),
            board_bound(HOSTILE, url, "l"),
            board_not_found(HOSTILE, &[HOSTILE.into()]),
            board_has_no_lists(HOSTILE),
            list_not_found(HOSTILE, &[]),
            no_done_list(&[HOSTILE.into()]),
            planka_user_unknown(HOSTILE, &[HOSTILE.into()]),
            cards_listed(&[(HOSTILE.into(), vec![card_line(1, HOSTILE, true)])], 0),
            browse_reading(HOSTILE),
            browse_failed(HOSTILE, HOSTILE, BrowseHint::None),
            llm_failed(HOSTILE, None),
            answer_cut(HOSTILE),
            cannot_check_model(HOSTILE),
            models("m", Err(HOSTILE.into())),
            planka_failed(HOSTILE),
            search_failed(HOSTILE),
            job_cancelled(Some(HOSTILE)),
            cancelling(HOSTILE),
            cancel_already_over(HOSTILE, "done"),
            cancel_not_yours(HOSTILE),
        ] {
            shows_hostile_as_text(&md);
        }
    }

    #[test]
    fn a_hostile_prompt_is_shown_as_quoted_text_line_by_line() {
        let prompt = format!("Answer like a pirate.\n  - {HOSTILE}\n\n# Big\n```\nfenced");
        let text = prompt_shown(&prompt, true);
        assert!(text.starts_with("This room's instructions:\n\n> Answer like a pirate.\n"), "{text}");
        let html = crate::matrix::markdown::to_html(&text).unwrap();
        assert!(html.contains("<blockquote>") && html.contains("Answer like a pirate.<br />"), "{html}");
        for made in ["href=", "<img", "<code", "<em>", "<h1", "<ul", "<pre", "@room"] {
            assert!(!html.contains(made), "{made} in {html}");
        }
        assert!(html.contains("# Big") && html.contains("```<br />\nfenced"), "{html}");
    }

    #[test]
    fn a_card_description_is_quoted_and_cut() {
        let description = format!("{HOSTILE}\n- [ ] a task\n{}", "x".repeat(400));
        let text = card_shown(12, "Title", "To do", false, Some(&description), "https://p/cards/9");
        assert!(text.starts_with("`#12` **Title** — in “To do” — <https://p/cards/9>\n\n> "), "{text}");
        assert!(text.ends_with("x…\n"), "the first 300 characters: {text}");
        let html = crate::matrix::markdown::to_html(&text).unwrap();
        assert!(!html.contains("<ul") && !html.contains("<img") && !html.contains("href=\"https://evil"), "{html}");
    }

    #[test]
    fn names_shown_as_code_keep_their_span_and_links_keep_their_brackets() {
        let name = "m` [l](https://evil) `";
        let text = unknown_model(name, &["a``b".into()]);
        let html = crate::matrix::markdown::to_html(&text).unwrap();
        assert!(html.contains("<code>m` [l](https://evil) `</code>") && !html.contains("href"), "{html}");
        assert!(html.contains("<code>a``b</code>"), "{html}");
        let html = crate::matrix::markdown::to_html(&browse_loading("https://x/> [l](https://evil) <img src=x>"));
        assert!(html.as_deref().is_none_or(|h| !h.contains("href") && !h.contains("<img")), "{html:?}");
        assert_eq!(browse_loading("https://example.org/").as_str(), "Opening <https://example.org/> …");
    }

    #[test]
    fn a_job_list_shows_labels_and_people_as_text() {
        let job = JobLine {
            label: HOSTILE.into(),
            kind: "chat".into(),
            who: "@_x_:y".into(),
            since_secs: 120,
            position: Some(2),
        };
        let text = jobs_listed(&[job]);
        shows_hostile_as_text(&text);
        assert!(text.contains(r"chat for @\_x\_:y, waiting (2nd in line here) for 2 min"), "{text}");
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
