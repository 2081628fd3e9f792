//! Durable slow work, off the rooms' lanes (invariant 9). A lane decides that a request needs slow
//! work ([`enqueue`]: bounded per room and per person, refused with a clear reply beyond that) and
//! the job is written with its trigger's removal from the inbox. The [`scheduler`] runs jobs with a
//! bound per [`Kind`], in order within a room and kind, fairly across rooms; shows a "queued"
//! notice when one has to wait (one status message, edited as it moves); cancels; and runs a job
//! cut short by a crash again, whose messages it then edits instead of posting new ones.
//!
//! What each kind does is not known here: the scheduler is given a [`Runner`] (see `work`), so the
//! features depend on this module and not the other way round.

mod order;
pub mod scheduler;

pub use scheduler::{Runner, run};

use crate::context::Context;
use crate::handler::{self, HandleError};
use crate::matrix::markdown::Md;
use crate::matrix::{notice_reply, txn_id_for};
use crate::progress::{Poster, Progress};
use crate::store::{Job, NewJob, Write};
use crate::strings;
use ruma::events::Mentions;
use ruma::events::room::message::OriginalRoomMessageEvent;
use ruma::{EventId, OwnedEventId};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The kinds of slow work, each with its own bound on jobs running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A chat answer from the model (`llm.max_concurrent`).
    Chat,
    /// A quick call to a backend that may still time out: Planka, search, the model list
    /// (`jobs.max_running_backend`).
    Backend,
    /// A page loaded in Chromium, then answered from (`browser.max_tabs`).
    Browser,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Chat, Kind::Backend, Kind::Browser];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Backend => "backend",
            Self::Browser => "browser",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Jobs of this kind running at once.
    pub fn bound(self, config: &crate::config::Config) -> usize {
        match self {
            Self::Chat => config.llm.max_concurrent,
            Self::Backend => config.jobs.max_running_backend,
            Self::Browser => config.browser.max_tabs,
        }
    }
}

/// How a job ended, as its runner tells the scheduler.
#[derive(Debug)]
pub enum JobEnd {
    /// Done; its result is in the room.
    Done,
    /// It cannot be done. `told` says whether the runner already told the room why (else the
    /// scheduler does, with `reason`).
    Failed { reason: String, told: bool },
    /// Stopped by a cancel, having said so where it posted.
    Cancelled,
    /// A backend (the homeserver, the database) failed in a way that may pass: try again later.
    Retry(HandleError),
}

impl From<Result<(), HandleError>> for JobEnd {
    /// A handler's result: an error it could not turn into a reply is retried when it may pass.
    fn from(result: Result<(), HandleError>) -> Self {
        match result {
            Ok(()) => Self::Done,
            Err(e) if e.is_transient() => Self::Retry(e),
            Err(e) => Self::Failed { reason: e.to_string(), told: false },
        }
    }
}

/// A job as its runner gets it.
pub struct RunningJob {
    pub job: Job,
    /// The message that asked for it.
    pub trigger: OriginalRoomMessageEvent,
    /// Cancelled when someone cancels the job (or the trigger is redacted); runners stop at the
    /// next step and say so.
    pub cancel: CancellationToken,
    status: Arc<Mutex<Status>>,
}

impl RunningJob {
    pub fn kind(&self) -> Option<Kind> {
        Kind::parse(&self.job.kind)
    }

    /// What the lane asked for.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.job.payload).map_err(|e| format!("job payload: {e}"))
    }

    /// The message an earlier run of this job posted as its result, to edit instead of posting anew.
    pub fn result_event(&self) -> Option<OwnedEventId> {
        self.job.result_event_id.as_deref().and_then(|id| EventId::parse(id).ok())
    }

    /// Remembers the job's result message, so a run after a crash edits it.
    pub async fn set_result_event(&self, ctx: &Context, event_id: &EventId) {
        if let Err(e) = ctx.store.job_set_result_event(self.job.id, event_id.as_str()).await {
            tracing::warn!(error = %e, "cannot remember the job's message");
        }
    }

    /// Shows `text` in the job's status message (posting it the first time).
    pub async fn show_status(&self, ctx: &Context, text: &Md) {
        self.status.lock().await.show(ctx, &self.job, &self.trigger, text).await;
    }
}

/// The status message of one job: absent until the job has something to say while it waits or works.
pub(crate) struct Status {
    progress: Option<Progress>,
    /// Its message from an earlier run, not taken over yet.
    earlier: Option<OwnedEventId>,
}

impl Status {
    pub(crate) fn of(job: &Job) -> Self {
        Self { progress: None, earlier: job.status_event_id.as_deref().and_then(|id| EventId::parse(id).ok()) }
    }

    pub(crate) fn exists(&self) -> bool {
        self.progress.is_some() || self.earlier.is_some()
    }

    fn poster(ctx: &Context, trigger: &OriginalRoomMessageEvent) -> Poster {
        Poster {
            matrix: ctx.matrix.clone(),
            user: ctx.namespace.sender().to_owned(),
            room: trigger.room_id.clone(),
            mentions: Some(Mentions::with_user_ids([trigger.sender.clone()])),
        }
    }

    fn interval(ctx: &Context) -> Duration {
        Duration::from_millis(ctx.config.llm.edit_interval_ms)
    }

    /// Shows `text`: posts the message the first time (a notice replying to the trigger, with a
    /// txn id derived from it), edits it later. Failures are logged: a status is a courtesy.
    pub(crate) async fn show(&mut self, ctx: &Context, job: &Job, trigger: &OriginalRoomMessageEvent, text: &Md) {
        if let Some(progress) = &self.progress {
            return progress.update(text.clone());
        }
        if let Some(earlier) = self.earlier.take() {
            let progress = Progress::resume(Self::poster(ctx, trigger), earlier, Self::interval(ctx));
            progress.update(text.clone());
            self.progress = Some(progress);
            return;
        }
        let txn = txn_id_for(trigger.event_id.as_str(), "job-status");
        let content = notice_reply(text, trigger);
        match Progress::start(Self::poster(ctx, trigger), &txn, &content, text, Self::interval(ctx)).await {
            Ok(progress) => {
                if let Err(e) = ctx.store.job_set_status_event(job.id, progress.event_id().as_str()).await {
                    tracing::warn!(error = %e, "cannot remember the job's status message");
                }
                self.progress = Some(progress);
            }
            Err(e) => tracing::warn!(error = %e, "cannot post the job's status message"),
        }
    }

    /// Ends the status message (if there is one) with `text`.
    pub(crate) async fn finish(&mut self, ctx: &Context, trigger: &OriginalRoomMessageEvent, text: &Md) {
        if let Some(earlier) = self.earlier.take() {
            self.progress = Some(Progress::resume(Self::poster(ctx, trigger), earlier, Self::interval(ctx)));
        }
        if let Some(progress) = self.progress.take()
            && let Err(e) = progress.finish(text.clone()).await
        {
            tracing::warn!(error = %e, "cannot show the job's last state");
        }
    }
}

/// The lane's side: slow work for `trigger` (whose JSON is `raw`) becomes a job of `kind` — or,
/// when the room or the person has too much waiting already, a refusal that is the trigger's one
/// reply. `payload` is what the runner reads back; `label` is what `!jobs` shows.
pub async fn enqueue(
    ctx: &Context,
    kind: Kind,
    trigger: &OriginalRoomMessageEvent,
    raw: &str,
    payload: &impl Serialize,
    label: &str,
) -> Result<Option<Write>, HandleError> {
    let (in_room, of_sender) = ctx.store.jobs_active_counts(trigger.room_id.as_str(), trigger.sender.as_str()).await?;
    let limits = &ctx.config.jobs;
    let refusal = if in_room >= limits.max_queued_per_room as i64 {
        Some(strings::room_queue_full(limits.max_queued_per_room))
    } else if of_sender >= limits.max_queued_per_user as i64 {
        Some(strings::user_queue_full(limits.max_queued_per_user))
    } else {
        None
    };
    if let Some(text) = refusal {
        tracing::info!(kind = kind.as_str(), in_room, of_sender, "job refused: queue bound reached");
        handler::reply(ctx, trigger, "queue-full", &text).await?;
        return Ok(None);
    }
    Ok(Some(Write::Job(NewJob {
        kind: kind.as_str().to_owned(),
        room_id: trigger.room_id.to_string(),
        trigger_event_id: trigger.event_id.to_string(),
        sender: trigger.sender.to_string(),
        trigger_event: raw.to_owned(),
        payload: serde_json::to_string(payload).expect("job payloads serialize"),
        label: label.to_owned(),
    })))
}
