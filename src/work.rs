//! Which feature does each kind of job: the runner the job workers are given (so `jobs` needs no
//! feature, and the features need only `jobs`).

use crate::browse;
use crate::chat;
use crate::commands;
use crate::jobs::{JobEnd, Kind, Runner, RunningJob};
use std::sync::Arc;

pub fn runner() -> Runner {
    Arc::new(|ctx, job: RunningJob| {
        Box::pin(async move {
            match job.kind() {
                Some(Kind::Chat) => chat::run_job(&ctx, &job).await,
                Some(Kind::Browser) => browse::run_job(&ctx, &job).await,
                Some(Kind::Backend) => {
                    // Short calls: a cancel drops the call instead of waiting for it.
                    tokio::select! {
                        end = commands::run_job(&ctx, &job) => end,
                        () = job.cancel.cancelled() => JobEnd::Cancelled,
                    }
                }
                None => JobEnd::Failed { reason: format!("unknown job kind {:?}", job.job.kind), told: false },
            }
        })
    })
}
