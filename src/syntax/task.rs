//! The words of `!task` and `!board` (pure, table-tested): what a message asks for, before any
//! Planka call. `commands::task` executes it.

use super::Command;
use crate::matrix::markdown::Md;
use crate::strings;

/// Card titles longer than this are refused rather than cut.
pub const MAX_TITLE_CHARS: usize = 256;

/// A `!task` command. `card: None` means "the card of the message this replies to".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCommand {
    Create { title: String },
    List { list: Option<String> },
    Show { card: Option<CardRef> },
    Move { card: Option<CardRef>, list: String },
    Done { card: Option<CardRef> },
    Comment { card: Option<CardRef>, text: String },
    Assign { card: Option<CardRef>, user: String },
}

/// How a message names a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardRef {
    /// `#12` or `12`: the room's short reference.
    Short(i64),
    /// A Planka card id, written out or inside a card link.
    Id(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardCommand {
    Show,
    Bind { board: BoardRef, list: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardRef {
    Id(String),
    /// `Project/Board`.
    Path(String),
}

/// Planka ids are 64-bit snowflakes (19 digits today); anything this short is a reference.
const MIN_ID_DIGITS: usize = 10;

impl CardRef {
    /// `#12`, `12`, `1913536964640900110`, or `https://…/cards/1913536964640900110`.
    pub fn parse(word: &str) -> Option<Self> {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(n) = word.strip_prefix('#') {
            return n.parse().ok().filter(|n| *n > 0).map(Self::Short);
        }
        if digits(word) {
            return Some(if word.len() >= MIN_ID_DIGITS {
                Self::Id(word.to_owned())
            } else {
                Self::Short(word.parse().ok().filter(|n| *n > 0)?)
            });
        }
        let (_, tail) = word.split_once("/cards/")?;
        let id = tail.split(['/', '?', '#']).next().unwrap_or_default();
        digits(id).then(|| Self::Id(id.to_owned()))
    }
}

/// `!task …`; `text` is everything after the name, as written.
pub fn task(text: &str) -> Command {
    let invalid = |reason: Md| Command::Invalid { reason };
    let (sub, rest) = split_first(text);
    let (card, after_card) = {
        let (first, remainder) = split_first(rest);
        match CardRef::parse(first) {
            Some(card) => (Some(card), remainder),
            None => (None, rest),
        }
    };
    let command = match sub.to_ascii_lowercase().as_str() {
        "" => return invalid(strings::task_needs_a_title()),
        "list" => TaskCommand::List { list: (!rest.is_empty()).then(|| rest.to_owned()) },
        "show" | "done" if !after_card.is_empty() => return invalid(strings::task_usage(&sub.to_ascii_lowercase())),
        "show" => TaskCommand::Show { card },
        "done" => TaskCommand::Done { card },
        "move" if after_card.is_empty() => return invalid(strings::task_usage("move")),
        "move" => TaskCommand::Move { card, list: after_card.to_owned() },
        "comment" if after_card.is_empty() => return invalid(strings::task_usage("comment")),
        "comment" => TaskCommand::Comment { card, text: after_card.to_owned() },
        "assign" if after_card.is_empty() || after_card.contains(char::is_whitespace) => {
            return invalid(strings::task_usage("assign"));
        }
        "assign" => TaskCommand::Assign { card, user: after_card.to_owned() },
        _ => {
            let title = text.trim();
            if title.chars().count() > MAX_TITLE_CHARS {
                return invalid(strings::task_title_too_long(MAX_TITLE_CHARS));
            }
            TaskCommand::Create { title: title.to_owned() }
        }
    };
    Command::Task(command)
}

/// `!board` or `!board bind <board id | "Project/Board"> [list]`.
pub fn board(text: &str) -> Command {
    let (sub, rest) = split_first(text);
    match sub.to_ascii_lowercase().as_str() {
        "" => Command::Board(BoardCommand::Show),
        "bind" => match words(rest) {
            Ok(words) if !words.is_empty() => {
                let board = &words[0];
                let board = if board.bytes().all(|b| b.is_ascii_digit()) {
                    BoardRef::Id(board.clone())
                } else {
                    BoardRef::Path(board.clone())
                };
                let list = (words.len() > 1).then(|| words[1..].join(" "));
                Command::Board(BoardCommand::Bind { board, list })
            }
            Ok(_) => Command::Invalid { reason: strings::board_bind_usage() },
            Err(reason) => Command::Invalid { reason },
        },
        _ => Command::Invalid { reason: strings::board_bind_usage() },
    }
}

/// The first word and the rest, trimmed.
fn split_first(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    }
}

/// Words, where `"double quoted"` text is one word (board and list names may contain spaces).
fn words(text: &str) -> Result<Vec<String>, Md> {
    let mut out = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '“' {
            chars.next();
            let word: String = chars.by_ref().take_while(|c| *c != '"' && *c != '”').collect();
            if word.trim().is_empty() {
                return Err(strings::board_bind_usage());
            }
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace()) {
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    if text.matches(['"', '“', '”']).count() % 2 == 1 {
        return Err(strings::unbalanced_quotes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn t(c: TaskCommand) -> Option<Command> {
        Some(Command::Task(c))
    }

    fn b(c: BoardCommand) -> Option<Command> {
        Some(Command::Board(c))
    }

    fn inv(reason: Md) -> Option<Command> {
        Some(Command::Invalid { reason })
    }

    const ID: &str = "1913536964640900110";

    #[test]
    fn parse_table() {
        let id = || Some(CardRef::Id(ID.into()));
        let cases: Vec<(&str, &str, Option<Command>)> = vec![
            (
                "create",
                "!task Fix the login  redirect",
                t(TaskCommand::Create { title: "Fix the login  redirect".into() }),
            ),
            ("slash create", "/task Fix it", t(TaskCommand::Create { title: "Fix it".into() })),
            ("create starting with a number", "!task 2 bugs", t(TaskCommand::Create { title: "2 bugs".into() })),
            ("no title", "!task", inv(strings::task_needs_a_title())),
            ("blank title", "!task   ", inv(strings::task_needs_a_title())),
            (
                "long title",
                &*Box::leak(format!("!task {}", "x".repeat(300)).into_boxed_str()),
                inv(strings::task_title_too_long(MAX_TITLE_CHARS)),
            ),
            ("list", "!task list", t(TaskCommand::List { list: None })),
            ("list a list", "!task LIST In progress", t(TaskCommand::List { list: Some("In progress".into()) })),
            ("show ref", "!task show #12", t(TaskCommand::Show { card: Some(CardRef::Short(12)) })),
            ("show bare number", "!task show 3", t(TaskCommand::Show { card: Some(CardRef::Short(3)) })),
            ("show id", &*Box::leak(format!("!task show {ID}").into_boxed_str()), t(TaskCommand::Show { card: id() })),
            (
                "show link",
                &*Box::leak(format!("!task show https://planka.example.org/cards/{ID}").into_boxed_str()),
                t(TaskCommand::Show { card: id() }),
            ),
            ("show by reply", "!task show", t(TaskCommand::Show { card: None })),
            ("show junk", "!task show #1 now", inv(strings::task_usage("show"))),
            ("done ref", "!task done #2", t(TaskCommand::Done { card: Some(CardRef::Short(2)) })),
            ("done by reply", "!task done", t(TaskCommand::Done { card: None })),
            ("done not a card", "!task done soon", inv(strings::task_usage("done"))),
            (
                "move",
                "!task move #2 In progress",
                t(TaskCommand::Move { card: Some(CardRef::Short(2)), list: "In progress".into() }),
            ),
            ("move by reply", "!task move Done", t(TaskCommand::Move { card: None, list: "Done".into() })),
            ("move nowhere", "!task move #2", inv(strings::task_usage("move"))),
            ("move nothing", "!task move", inv(strings::task_usage("move"))),
            (
                "comment",
                "!task comment #2 looks  good",
                t(TaskCommand::Comment { card: Some(CardRef::Short(2)), text: "looks  good".into() }),
            ),
            ("comment by reply", "!task comment ok", t(TaskCommand::Comment { card: None, text: "ok".into() })),
            ("comment empty", "!task comment #2", inv(strings::task_usage("comment"))),
            (
                "assign",
                "!task assign #2 alice",
                t(TaskCommand::Assign { card: Some(CardRef::Short(2)), user: "alice".into() }),
            ),
            (
                "assign matrix user by reply",
                "!task assign @alice:x.y",
                t(TaskCommand::Assign { card: None, user: "@alice:x.y".into() }),
            ),
            ("assign two users", "!task assign #2 alice bob", inv(strings::task_usage("assign"))),
            ("board", "!board", b(BoardCommand::Show)),
            (
                "bind id",
                &*Box::leak(format!("!board bind {ID}").into_boxed_str()),
                b(BoardCommand::Bind { board: BoardRef::Id(ID.into()), list: None }),
            ),
            (
                "bind path and list",
                "!board bind Conclave/Dev To do",
                b(BoardCommand::Bind { board: BoardRef::Path("Conclave/Dev".into()), list: Some("To do".into()) }),
            ),
            (
                "bind quoted",
                "!board bind \"My project/Dev board\" \"To do\"",
                b(BoardCommand::Bind {
                    board: BoardRef::Path("My project/Dev board".into()),
                    list: Some("To do".into()),
                }),
            ),
            ("bind nothing", "!board bind", inv(strings::board_bind_usage())),
            ("bind open quote", "!board bind \"My project/Dev", inv(strings::unbalanced_quotes())),
            ("board junk", "!board frob", inv(strings::board_bind_usage())),
        ];
        for (name, body, want) in cases {
            assert_eq!(parse(body), want, "case {name}: {body:?}");
        }
    }

    #[test]
    fn card_refs() {
        assert_eq!(CardRef::parse("#0"), None);
        assert_eq!(CardRef::parse("#x"), None);
        assert_eq!(CardRef::parse("https://p/boards/12"), None);
        assert_eq!(CardRef::parse("http://p/cards/77/"), Some(CardRef::Id("77".into())));
        assert_eq!(CardRef::parse("Done"), None);
    }
}
