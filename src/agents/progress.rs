//! A coding agent's progress: one message of its ghost, edited in place through
//! [`crate::progress`] (at most one edit a second, the last text always lands), ending `done` or
//! `failed`. Its state is in the database, so an update after a restart takes the message up
//! again, and a final edit that was owed when the agent stopped is made at the next start.

use super::{Agent, AgentError, rooms, send};
use crate::context::Context;
use crate::matrix::markdown::{self, Md, md};
use crate::matrix::txn_id_for;
use crate::progress::{Poster, Progress};
use crate::store::AgentProgressRow;
use ruma::events::relation::Thread;
use ruma::events::room::message::Relation;
use ruma::{EventId, OwnedEventId, RoomId};
use std::time::{Duration, Instant};

/// At most one edit per this (DESIGN: ≤ 1 edit/s).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Progress messages edited at once; beyond, the least recently updated is let go (and taken up
/// again from the database on its next update).
const LIVE_MAX: usize = 256;
const MAX_TITLE: usize = 1024;
const MAX_TEXT: usize = 16 * 1024;

/// `running`, `done`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Done,
    Failed,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Running,
        }
    }
}

/// What the message shows: the coding agent's title and text are its own Markdown (rendered with
/// their raw HTML as text).
fn render(title: &str, state: State, text: &str) -> Md {
    let mark = Md::lit(match state {
        State::Running => "⏳",
        State::Done => "✅",
        State::Failed => "❌",
    });
    let title = Md::untrusted_markdown(title.trim());
    match text.trim() {
        "" => md!("{} **{}**", mark, title),
        text => md!("{} **{}**\n\n{}", mark, title, Md::untrusted_markdown(text)),
    }
}

/// The answer to a start or an update.
#[derive(Debug, serde::Serialize)]
pub struct Shown {
    pub id: String,
    pub event_id: String,
    pub state: State,
}

/// `POST /conclave/v1/progress {room, thread?, title}`
pub async fn start(
    ctx: &Context,
    agent: &Agent,
    room: &str,
    thread: Option<&str>,
    title: &str,
) -> Result<Shown, AgentError> {
    let title = title.trim();
    if title.is_empty() || title.len() > MAX_TITLE {
        return Err(AgentError::Invalid(format!("title must be 1 to {MAX_TITLE} bytes")));
    }
    let room = rooms::usable(ctx, agent, room).await?;
    let thread = thread
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| EventId::parse(t).map_err(|e| AgentError::Invalid(format!("thread {t:?} is not an event id: {e}"))))
        .transpose()?;
    let id: String = (0..16).map(|_| format!("{:x}", rand::random::<u8>() & 0xf)).collect();
    let first = render(title, State::Running, "");
    let mut content = markdown::content(&first, true);
    content.relates_to = thread.map(|root| Relation::Thread(Thread::plain(root.clone(), root)));
    let txn = txn_id_for(&format!("agent {}", agent.name), &format!("progress {id}"));
    let poster = poster(ctx, agent, &room);
    // The editor counts its interval from this post, so even the first edit waits a second.
    let progress = match Progress::start(poster.clone(), &txn, &content, &first, INTERVAL).await {
        Err(e) if e.errcode() == Some("M_FORBIDDEN") => {
            send::join(ctx, agent, &room).await?;
            Progress::start(poster, &txn, &content, &first, INTERVAL).await
        }
        other => other,
    }
    .map_err(|e| send::refused(agent, &room, e))?;
    let event_id = progress.event_id().to_owned();
    send::remember(ctx, agent, &room, &event_id);
    let row = AgentProgressRow {
        id: id.clone(),
        agent: agent.name.clone(),
        room_id: room.to_string(),
        event_id: event_id.to_string(),
        title: title.to_owned(),
        text: String::new(),
        state: State::Running.as_str().to_owned(),
    };
    ctx.store.agent_progress_insert(&row).await?;
    crate::telemetry::coding_agent_run(State::Running.as_str());
    keep(ctx, &id, progress);
    Ok(Shown { id, event_id: event_id.to_string(), state: State::Running })
}

/// `PUT /conclave/v1/progress/{id} {text?, state?}`: new text shows within the interval; `done`
/// and `failed` are final and answer once the final text is shown.
pub async fn update(
    ctx: &Context,
    agent: &Agent,
    id: &str,
    text: Option<&str>,
    state: Option<State>,
) -> Result<Shown, AgentError> {
    let row = match ctx.store.agent_progress(id).await? {
        // Another agent's progress is as unknown as one that never was.
        Some(row) if row.agent == agent.name => row,
        _ => return Err(AgentError::NotFound(format!("no progress message {id:?} of agent {}", agent.name))),
    };
    if let Some(text) = text
        && text.len() > MAX_TEXT
    {
        return Err(AgentError::Invalid(format!("text is longer than {MAX_TEXT} bytes")));
    }
    let state = state.unwrap_or(State::Running);
    let text = text.unwrap_or(&row.text).to_owned();
    let finished = || AgentError::BadState(format!("progress {id} is {} already: start a new one", row.state));
    if State::parse(&row.state) != State::Running || !ctx.store.agent_progress_set(id, &text, state.as_str()).await? {
        return Err(finished());
    }
    if state != State::Running {
        crate::telemetry::coding_agent_run(state.as_str());
    }
    let shown = render(&row.title, state, &text);
    let progress = take(ctx, id).unwrap_or_else(|| taken_up(ctx, agent, &row));
    if state == State::Running {
        progress.update(shown);
        keep(ctx, id, progress);
    } else {
        finish(ctx, id, progress, shown).await?;
    }
    Ok(Shown { id: id.to_owned(), event_id: row.event_id, state })
}

async fn finish(ctx: &Context, id: &str, progress: Progress, text: Md) -> Result<(), AgentError> {
    progress.finish_paced(text).await.map_err(AgentError::matrix("showing the final progress"))?;
    ctx.store.agent_progress_finished(id).await?;
    Ok(())
}

/// At start: the final edits still owed (the agent stopped between recording and showing them).
pub async fn finish_owed(ctx: &Context) {
    let owed = match ctx.store.agent_progress_owed().await {
        Ok(owed) => owed,
        Err(e) => return tracing::warn!(error = %e, "cannot read the progress messages owed a final edit"),
    };
    for row in owed {
        let Some(agent) = ctx.agents.get(&row.agent) else { continue };
        let text = render(&row.title, State::parse(&row.state), &row.text);
        if let Err(e) = finish(ctx, &row.id, taken_up(ctx, agent, &row), text).await {
            tracing::warn!(error = %e, progress = %row.id, "cannot show a progress message's final state");
        }
    }
}

fn poster(ctx: &Context, agent: &Agent, room: &RoomId) -> Poster {
    Poster { matrix: ctx.matrix.clone(), user: agent.user_id.clone(), room: room.to_owned(), mentions: None }
}

/// The editor of a message posted earlier (before a restart, or let go).
fn taken_up(ctx: &Context, agent: &Agent, row: &AgentProgressRow) -> Progress {
    let room = RoomId::parse(&row.room_id).expect("stored room ids parse");
    let event_id: OwnedEventId = EventId::parse(&row.event_id).expect("stored event ids parse");
    Progress::resume(poster(ctx, agent, &room), event_id, INTERVAL)
}

fn take(ctx: &Context, id: &str) -> Option<Progress> {
    ctx.agents.progress.lock().expect("not poisoned").remove(id).map(|(p, _)| p)
}

fn keep(ctx: &Context, id: &str, progress: Progress) {
    let mut live = ctx.agents.progress.lock().expect("not poisoned");
    if live.len() >= LIVE_MAX
        && let Some(oldest) = live.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
    {
        // Dropping the editor stops it; the row keeps what to show.
        live.remove(&oldest);
    }
    live.insert(id.to_owned(), (progress, Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_shows_state_title_and_text() {
        assert_eq!(render("Build", State::Running, "").as_str(), "⏳ **Build**");
        assert_eq!(render(" Build ", State::Done, "all green\n").as_str(), "✅ **Build**\n\nall green");
        assert!(render("Build", State::Failed, "x").starts_with("❌"));
        assert_eq!(State::parse("done"), State::Done);
        assert_eq!(serde_json::to_value(State::Failed).unwrap(), "failed");
    }
}
