//! What of a room's history a member may read, from the room's `m.room.history_visibility` and
//! the member's own membership, both as they changed over time: search and the chat context show
//! a person only messages their own client could show them (invariant 4).
//!
//! The rules are the Matrix spec's: a message sent while the visibility was `shared` (the default)
//! or `world_readable` is readable by every current member; one sent while it was `invited` only
//! from the member's invite on; while `joined` only from their join on. Where the homeserver does
//! not show how things were (an earlier state event hidden from the agent, a very long chain), the
//! strictest reading is taken: unknown visibility counts as `joined`, an unknown start of the
//! membership as the earliest one seen. Earlier spells of membership (left, then joined again)
//! are not counted: only the current one opens history.

use crate::matrix::{MatrixClient, MatrixError, StateHistory};
use crate::rag::{SeenRoom, Window};
use ruma::{RoomId, UserId};

/// State events followed back per lookup (visibility changes, or profile changes of a member).
const DEPTH: usize = 20;

/// One state change: when it was sent, and the value it set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub ts: i64,
    pub value: String,
}

/// What `asker` may read of `room`, as `me` (in the room) sees its state; `None` when `asker` is
/// not joined to it now.
pub async fn seen_room(
    matrix: &MatrixClient,
    me: &UserId,
    room: &RoomId,
    asker: &UserId,
) -> Result<Option<SeenRoom>, MatrixError> {
    let member = matrix.state_history(me, room, "m.room.member", asker.as_str(), DEPTH).await?;
    let membership = changes(&member, "membership");
    if membership.last().is_none_or(|c| c.value != "join") {
        return Ok(None);
    }
    let visibility = matrix.state_history(me, room, "m.room.history_visibility", "", DEPTH).await?;
    let windows = windows(&changes(&visibility, "history_visibility"), visibility.complete, &membership);
    Ok(Some(SeenRoom { room: room.to_string(), windows }))
}

/// The changes in `history`, oldest first, with the value of `field` of each.
fn changes(history: &StateHistory, field: &str) -> Vec<Change> {
    history
        .events
        .iter()
        .rev()
        .map(|e| Change {
            ts: e["origin_server_ts"].as_i64().unwrap_or(i64::MAX),
            value: e["content"][field].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The times whose messages a member may read (`None`: all), given the visibility changes oldest
/// first (`complete`: the first one known is the room's first) and the member's membership
/// changes oldest first, the last being their current `join`.
pub fn windows(visibility: &[Change], complete: bool, membership: &[Change]) -> Option<Vec<Window>> {
    let value = |i: usize| membership[i].value.as_str();
    // The current spell: joined since the first `join` of the last run of them (profile changes
    // repeat `join`), invited since the first `invite` right before it.
    let mut first_join = membership.len();
    while first_join > 0 && value(first_join - 1) == "join" {
        first_join -= 1;
    }
    let joined = membership.get(first_join).map_or(i64::MAX, |c| c.ts);
    let mut first_invite = first_join;
    while first_invite > 0 && value(first_invite - 1) == "invite" {
        first_invite -= 1;
    }
    let invited = if first_invite < first_join { membership[first_invite].ts } else { joined };

    let mut spans = Vec::with_capacity(visibility.len() + 1);
    // Before the first change: the spec's default (shared) when the room never set one; its first
    // setting otherwise (it is part of the room's creation, so only creation events precede it);
    // the strictest when the chain was cut short.
    let before = match visibility.first() {
        _ if !complete => "joined",
        None => "shared",
        Some(first) => first.value.as_str(),
    };
    let (mut from, mut current) = (i64::MIN, before);
    for change in visibility {
        spans.push((from, Some(change.ts), current));
        (from, current) = (change.ts, change.value.as_str());
    }
    spans.push((from, None, current));

    let mut out: Vec<Window> = Vec::new();
    for (from, until, visibility) in spans {
        let from = match visibility {
            "shared" | "world_readable" => from,
            "invited" => from.max(invited),
            _ => from.max(joined), // `joined`, or a value this code does not know: the strictest
        };
        if until.is_some_and(|until| from >= until) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.until == Some(from) => last.until = until,
            _ => out.push(Window { from, until }),
        }
    }
    match out.as_slice() {
        [Window { from: i64::MIN, until: None }] => None,
        _ => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ts: i64, value: &str) -> Change {
        Change { ts, value: value.into() }
    }

    fn since(from: i64) -> Window {
        Window { from, until: None }
    }

    #[test]
    fn shared_history_is_all_readable() {
        assert_eq!(windows(&[c(1, "shared")], true, &[c(50, "join")]), None);
        assert_eq!(windows(&[], true, &[c(50, "join")]), None, "never set: the default, shared");
        assert_eq!(windows(&[c(1, "world_readable")], true, &[c(50, "join")]), None);
    }

    #[test]
    fn joined_and_invited_rooms_open_from_the_join_or_the_invite() {
        let member = [c(40, "invite"), c(50, "join"), c(60, "join")]; // the last: a new display name
        assert_eq!(windows(&[c(1, "joined")], true, &member), Some(vec![since(50)]));
        assert_eq!(windows(&[c(1, "invited")], true, &member), Some(vec![since(40)]));
        // Joined without an invite (a public room): invited means joined.
        assert_eq!(windows(&[c(1, "invited")], true, &[c(50, "join")]), Some(vec![since(50)]));
    }

    #[test]
    fn only_the_current_spell_of_membership_counts() {
        let member = [c(10, "join"), c(20, "leave"), c(30, "invite"), c(35, "invite"), c(50, "join")];
        assert_eq!(windows(&[c(1, "joined")], true, &member), Some(vec![since(50)]));
        assert_eq!(windows(&[c(1, "invited")], true, &member), Some(vec![since(30)]));
    }

    #[test]
    fn each_message_is_judged_by_the_visibility_when_it_was_sent() {
        // joined until 100, shared from 100 to 200, joined again from 200; the member joined at 150.
        let visibility = [c(1, "joined"), c(100, "shared"), c(200, "joined")];
        let got = windows(&visibility, true, &[c(150, "join")]);
        assert_eq!(got, Some(vec![Window { from: 100, until: None }]), "shared before the join, then since it");
        // Joined at 250: the shared span before it is readable, the joined span only from 250.
        let got = windows(&visibility, true, &[c(250, "join")]);
        assert_eq!(got, Some(vec![Window { from: 100, until: Some(200) }, since(250)]));
        // A room that was shared and became joined: what was shared stays readable.
        let got = windows(&[c(1, "shared"), c(100, "joined")], true, &[c(150, "join")]);
        assert_eq!(got, Some(vec![Window { from: i64::MIN, until: Some(100) }, since(150)]));
    }

    #[test]
    fn what_the_homeserver_does_not_show_is_read_strictly() {
        // The first visibility seen is shared, from 100; before that nothing is known.
        let got = windows(&[c(100, "shared")], false, &[c(150, "join")]);
        assert_eq!(got, Some(vec![since(100)]));
        // An unknown value counts as joined.
        assert_eq!(windows(&[c(1, "members_only")], true, &[c(150, "join")]), Some(vec![since(150)]));
    }
}
