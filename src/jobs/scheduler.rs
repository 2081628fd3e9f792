//! The job workers: start queued jobs (a bound per kind, one at a time per room and kind, rooms
//! taking turns), show a "queued" status to jobs that wait, carry out cancels, retry what may pass,
//! and end every job in a final state that the room can see.

use super::order::fair_order;
use super::{JobEnd, Kind, RunningJob, Status};
use crate::backoff::Backoff;
use crate::context::Context;
use crate::handler;
use crate::matrix::markdown::Md;
use crate::store::{Job, JobState, now_ms};
use crate::strings;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ruma::events::room::message::OriginalRoomMessageEvent;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// What runs a job; given by the caller, so this module knows no feature.
pub type Runner = Arc<dyn Fn(Arc<Context>, RunningJob) -> BoxFuture<'static, JobEnd> + Send + Sync>;

/// Jobs of one room and kind running at once: answers in one room come in the order asked.
const PER_ROOM: usize = 1;
/// Queued jobs of one kind looked at per pass (the queue bounds keep far fewer).
const LOOK_AHEAD: i64 = 2_000;
/// Passes happen on every wake, and at least this often (retries coming due, cancels).
const TICK: Duration = Duration::from_secs(1);
/// A cancelled job that has not stopped by itself after this is stopped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for running jobs before it puts them back in the queue.
const DRAIN: Duration = Duration::from_secs(10);
/// Tries of one job (crashes and retries both count) before it is given up.
const MAX_ATTEMPTS: i64 = 8;
/// Back-off of a job that failed in a way that may pass: 2 s doubling up to 5 minutes.
const RETRY: Backoff = Backoff { base_ms: 2_000, max_ms: 300_000 };

struct Running {
    job: Job,
    kind: Kind,
    trigger: OriginalRoomMessageEvent,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    abort: AbortHandle,
    cancelled_at: Option<Instant>,
    started: Instant,
}

/// A job that waits, with its status message and what it shows now.
struct Waiting {
    status: Arc<Mutex<Status>>,
    shown: Md,
}

struct Scheduler {
    ctx: Arc<Context>,
    runner: Runner,
    running: HashMap<i64, Running>,
    workers: JoinSet<(i64, JobEnd)>,
    /// Which job each worker task runs (a task that panicked or was aborted only has its id).
    tasks: HashMap<tokio::task::Id, i64>,
    waiting: HashMap<i64, Waiting>,
    /// Per kind and room, the sequence number of its last start (rooms take turns).
    turns: HashMap<Kind, HashMap<String, u64>>,
    starts: u64,
}

/// Runs jobs until `shutdown` turns true; then waits a bounded time and leaves the rest queued.
pub async fn run(ctx: Arc<Context>, runner: Runner, mut shutdown: watch::Receiver<bool>) {
    match ctx.store.jobs_recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "jobs cut short by the last stop are queued again"),
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted jobs"),
    }
    let mut s = Scheduler {
        ctx: ctx.clone(),
        runner,
        running: HashMap::new(),
        workers: JoinSet::new(),
        tasks: HashMap::new(),
        waiting: HashMap::new(),
        turns: HashMap::new(),
        starts: 0,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Err(e) = s.pass().await {
            tracing::error!(error = %e, "cannot read the job queue; retrying");
        }
        tokio::select! {
            _ = ctx.jobs_wake.notified() => {}
            Some(ended) = s.workers.join_next_with_id() => s.ended(ended).await,
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
    }
    s.drain().await;
}

impl Scheduler {
    async fn pass(&mut self) -> Result<(), crate::store::StoreError> {
        self.cancels().await?;
        for kind in Kind::ALL {
            self.start(kind).await?;
        }
        Ok(())
    }

    /// Cancels asked for: running jobs are told (and stopped if they do not stop by themselves),
    /// queued ones end at once.
    async fn cancels(&mut self) -> Result<(), crate::store::StoreError> {
        for job in self.ctx.store.jobs_cancel_requested().await? {
            if let Some(r) = self.running.get_mut(&job.id) {
                match r.cancelled_at {
                    None => {
                        tracing::info!(job = job.id, by = job.cancelled_by.as_deref(), "cancelling a running job");
                        r.cancel.cancel();
                        r.cancelled_at = Some(Instant::now());
                        r.job.cancelled_by = job.cancelled_by.clone();
                    }
                    Some(at) if at.elapsed() > CANCEL_GRACE => r.abort.abort(),
                    Some(_) => {}
                }
            } else if job.state == JobState::Queued && self.ctx.store.job_cancel_queued(job.id).await? {
                tracing::info!(job = job.id, by = job.cancelled_by.as_deref(), "cancelled a queued job");
                let status = self.waiting.remove(&job.id).map(|w| w.status);
                let status = status.unwrap_or_else(|| Arc::new(Mutex::new(Status::of(&job))));
                if let Ok(trigger) = trigger_of(&job) {
                    status
                        .lock()
                        .await
                        .finish(&self.ctx, &trigger, &strings::job_cancelled(job.cancelled_by.as_deref()))
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Starts what the bound of `kind` allows, fairly; tells the jobs left waiting where they are.
    async fn start(&mut self, kind: Kind) -> Result<(), crate::store::StoreError> {
        let queued = self.ctx.store.jobs_queued(kind.as_str(), LOOK_AHEAD).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // A room whose first job waits for a retry holds its later ones (they start in order).
        let mut held: Vec<&str> = Vec::new();
        for job in &queued {
            if job.not_before > now && !held.contains(&job.room_id.as_str()) {
                held.push(&job.room_id);
            }
        }
        let due: Vec<(i64, &str)> =
            queued.iter().filter(|j| !held.contains(&j.room_id.as_str())).map(|j| (j.id, j.room_id.as_str())).collect();
        let turns = self.turns.entry(kind).or_default();
        let order = fair_order(&due, turns);
        let by_id: HashMap<i64, &Job> = queued.iter().map(|j| (j.id, j)).collect();
        let mut left = Vec::new();
        for id in order {
            let job = by_id[&id];
            let running_here = self.running.values().filter(|r| r.kind == kind && r.job.room_id == job.room_id).count();
            let running_kind = self.running.values().filter(|r| r.kind == kind).count();
            if running_kind < kind.bound(&self.ctx.config) && running_here < PER_ROOM {
                if let Some(claimed) = self.ctx.store.job_claim(id).await? {
                    self.launch(kind, claimed).await;
                }
            } else {
                left.push(job);
            }
        }
        for (ahead, job) in left.into_iter().enumerate() {
            self.tell_waiting(job, ahead).await;
        }
        Ok(())
    }

    /// One status message per waiting job: posted when it first waits, edited as it moves.
    async fn tell_waiting(&mut self, job: &Job, ahead: usize) {
        if job.cancel_requested {
            return;
        }
        let text = strings::job_queued(ahead);
        let Ok(trigger) = trigger_of(job) else { return };
        let waiting = self
            .waiting
            .entry(job.id)
            .or_insert_with(|| Waiting { status: Arc::new(Mutex::new(Status::of(job))), shown: Md::default() });
        if waiting.shown != text {
            waiting.status.lock().await.show(&self.ctx, job, &trigger, &text).await;
            waiting.shown = text;
        }
    }

    async fn launch(&mut self, kind: Kind, job: Job) {
        let trigger = match trigger_of(&job) {
            Ok(trigger) => trigger,
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "a job whose trigger does not parse is given up");
                self.record(&job, JobState::Failed, Some(&e)).await;
                return;
            }
        };
        let status = match self.waiting.remove(&job.id) {
            Some(w) => w.status,
            None => Arc::new(Mutex::new(Status::of(&job))),
        };
        if job.attempts > MAX_ATTEMPTS {
            tracing::warn!(job = job.id, attempts = job.attempts, "a job interrupted too often is given up");
            self.record(&job, JobState::Failed, Some("interrupted too often")).await;
            tell(&self.ctx, &trigger, &mut *status.lock().await, &strings::job_interrupted()).await;
            return;
        }
        {
            let mut status = status.lock().await;
            if status.exists() {
                status.show(&self.ctx, &job, &trigger, &strings::job_started()).await;
            }
        }
        let cancel = CancellationToken::new();
        if job.cancel_requested {
            cancel.cancel();
        }
        let id = job.id;
        let work =
            RunningJob { job: job.clone(), trigger: trigger.clone(), cancel: cancel.clone(), status: status.clone() };
        let run = (self.runner)(self.ctx.clone(), work);
        let abort = self.workers.spawn(async move {
            let end = AssertUnwindSafe(run)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| JobEnd::Failed { reason: "the job's code panicked".into(), told: false });
            (id, end)
        });
        self.tasks.insert(abort.id(), id);
        self.starts += 1;
        self.turns.entry(kind).or_default().insert(job.room_id.clone(), self.starts);
        tracing::info!(job = id, kind = kind.as_str(), room_id = %job.room_id, attempt = job.attempts, "job started");
        self.running.insert(
            id,
            Running { job, kind, trigger, status, cancel, abort, cancelled_at: None, started: Instant::now() },
        );
    }

    async fn ended(&mut self, ended: Result<(tokio::task::Id, (i64, JobEnd)), tokio::task::JoinError>) {
        let (task, end) = match ended {
            Ok((task, (_, end))) => (task, end),
            // Stopped after a cancel it did not heed (or a panic outside the catch).
            Err(e) if e.is_cancelled() => (e.id(), JobEnd::Cancelled),
            Err(e) => (e.id(), JobEnd::Failed { reason: format!("the job's task failed: {e}"), told: false }),
        };
        let Some(id) = self.tasks.remove(&task) else { return };
        let Some(r) = self.running.remove(&id) else { return };
        self.finish(r, end).await;
        // Its room and kind may start the next one.
        self.ctx.jobs_wake.notify_one();
    }

    async fn finish(&mut self, r: Running, end: JobEnd) {
        let (job, ctx) = (&r.job, self.ctx.clone());
        let mut status = r.status.lock().await;
        let outcome = match &end {
            JobEnd::Done => "done",
            JobEnd::Cancelled => "cancelled",
            JobEnd::Failed { .. } => "failed",
            JobEnd::Retry(_) => "retry",
        };
        crate::telemetry::job_ran(r.kind.as_str(), outcome, r.started.elapsed());
        match end {
            JobEnd::Done => {
                self.record(job, JobState::Done, None).await;
                status.finish(&ctx, &r.trigger, &strings::job_done()).await;
            }
            JobEnd::Cancelled => {
                self.record(job, JobState::Cancelled, None).await;
                status.finish(&ctx, &r.trigger, &strings::job_cancelled(job.cancelled_by.as_deref())).await;
            }
            JobEnd::Failed { reason, told } => {
                tracing::warn!(job = job.id, reason, "job failed");
                self.record(job, JobState::Failed, Some(&reason)).await;
                if told {
                    status.finish(&ctx, &r.trigger, &strings::job_failed_told()).await;
                } else {
                    tell(&ctx, &r.trigger, &mut status, &strings::job_failed()).await;
                }
            }
            JobEnd::Retry(e) if job.attempts >= MAX_ATTEMPTS => {
                tracing::warn!(job = job.id, error = %e, "job failed too often; giving up");
                self.record(job, JobState::Failed, Some(&e.to_string())).await;
                tell(&ctx, &r.trigger, &mut status, &strings::job_failed()).await;
            }
            JobEnd::Retry(e) => {
                let delay = RETRY.delay_ms(job.attempts - 1);
                tracing::warn!(job = job.id, attempt = job.attempts, delay_ms = delay, error = %e, "job failed; will retry");
                if let Err(e) = ctx.store.job_retry_at(job.id, now_ms() + delay, &e.to_string()).await {
                    tracing::error!(job = job.id, error = %e, "cannot queue the job again");
                }
                drop(status);
                self.waiting.insert(job.id, Waiting { status: r.status.clone(), shown: Md::default() });
            }
        }
    }

    async fn record(&self, job: &Job, state: JobState, error: Option<&str>) {
        if let Err(e) = self.ctx.store.job_finish(job.id, state, error).await {
            // Left running, it is queued again at the next start and ends then.
            tracing::error!(job = job.id, error = %e, "cannot record how the job ended");
        }
    }

    /// Stops taking jobs, waits a bounded time for the running ones, and queues the rest again.
    async fn drain(&mut self) {
        if self.running.is_empty() {
            return;
        }
        tracing::info!(jobs = self.running.len(), "waiting for running jobs");
        let deadline = tokio::time::Instant::now() + DRAIN;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.workers.join_next_with_id()).await {
                Ok(Some(ended)) => self.ended(ended).await,
                Ok(None) | Err(_) => break,
            }
        }
        for (id, r) in self.running.drain() {
            r.abort.abort();
            if let Err(e) = self.ctx.store.job_requeue(id).await {
                tracing::error!(job = id, error = %e, "cannot queue the job again; it is recovered at the next start");
            }
        }
        tracing::info!("jobs still running were put back in the queue");
    }
}

/// Says `text` where the job's users will see it: its status message, else a reply to the trigger
/// (the trigger's one visible outcome).
async fn tell(ctx: &Context, trigger: &OriginalRoomMessageEvent, status: &mut Status, text: &Md) {
    if status.exists() {
        status.finish(ctx, trigger, text).await;
    } else if let Err(e) = handler::reply(ctx, trigger, "job-failed", text).await {
        tracing::warn!(error = %e, "cannot tell the room that a job failed");
    }
}

fn trigger_of(job: &Job) -> Result<OriginalRoomMessageEvent, String> {
    serde_json::from_str(&job.trigger_event).map_err(|e| format!("the job's trigger does not parse: {e}"))
}
