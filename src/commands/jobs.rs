//! `!jobs` and `!cancel`: what a room has waiting or running, and stopping it. Both answer at once
//! from the database; the cancel itself is carried out by the job workers.

use crate::context::Context;
use crate::handler::HandleError;
use crate::matrix::markdown::Md;
use crate::store::{CancelTarget, Job, JobState, Write, now_ms};
use crate::strings::{self, JobLine};
use ruma::events::room::message::{OriginalRoomMessageEvent, Relation};

/// The reply to `!jobs`: this room's queued and running jobs, oldest first.
pub async fn list(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<Md, HandleError> {
    let jobs = ctx.store.jobs_in_room(ev.room_id.as_str()).await?;
    let now = now_ms();
    let mut waiting = 0;
    let lines: Vec<JobLine> = jobs
        .iter()
        .map(|job| {
            let position = (job.state == JobState::Queued).then(|| {
                waiting += 1;
                waiting
            });
            JobLine {
                label: job.label.clone(),
                kind: job.kind.clone(),
                who: job.sender.clone(),
                since_secs: (now - job.started_at.unwrap_or(job.created_at)).max(0) / 1000,
                position,
            }
        })
        .collect();
    Ok(strings::jobs_listed(&lines))
}

/// The reply to `!cancel`, and the cancel to write: the job of the message replied to (a job's
/// request, status or result), else the asker's latest job here. People cancel their own jobs;
/// admins anyone's.
pub async fn cancel(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<(Md, Option<Write>), HandleError> {
    let room = ev.room_id.as_str();
    let job = match replied_to(ev) {
        Some(target) => match ctx.store.job_by_event(room, target).await? {
            Some(job) => job,
            None => return Ok((strings::cancel_no_job_there(), None)),
        },
        None => match ctx.store.job_latest_of(room, ev.sender.as_str()).await? {
            Some(job) => job,
            None => return Ok((strings::cancel_nothing_of_yours(), None)),
        },
    };
    if job.state.is_final() {
        return Ok((strings::cancel_already_over(&job.label, job.state.as_str()), None));
    }
    if job.sender != ev.sender.as_str() && !ctx.access.is_admin(&ev.sender) {
        return Ok((strings::cancel_not_yours(&job.sender), None));
    }
    Ok((strings::cancelling(&job.label), Some(cancel_write(&job, ev))))
}

fn cancel_write(job: &Job, ev: &OriginalRoomMessageEvent) -> Write {
    Write::Cancel { target: CancelTarget::Id(job.id), by: ev.sender.to_string() }
}

/// The event a message replies to (a threaded message's fallback reply does not count: it points
/// at the thread's latest message, not at something the person chose).
fn replied_to(ev: &OriginalRoomMessageEvent) -> Option<&str> {
    match &ev.content.relates_to {
        Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id.as_str()),
        Some(Relation::Thread(thread)) if !thread.is_falling_back => {
            thread.in_reply_to.as_ref().map(|r| r.event_id.as_str())
        }
        _ => None,
    }
}
