//! `!status`: the probes of [`crate::probe`] (cached a few seconds), the queue depths, uptime and
//! version, as one message. Addresses appear only for admins.

use crate::context::Context;
use crate::handler::HandleError;
use crate::matrix::markdown::Md;
use crate::probe::{self, Database, Targets};
use crate::strings::{self, Queues};
use ruma::events::room::message::OriginalRoomMessageEvent;

pub async fn run(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<Md, HandleError> {
    let targets = Targets {
        config: &ctx.config,
        matrix: &ctx.matrix,
        database: Database::Open(&ctx.store),
        llm: &ctx.llm,
        rag: &ctx.rag,
        planka: ctx.tasks.as_ref().map(|t| &t.client),
        browser: &ctx.browser,
    };
    let reports = ctx.status_cache.get_or_run(probe::run(&targets)).await;
    // The queues come from the database; when it is down, its line already says so.
    let queues = async {
        Ok::<_, crate::store::StoreError>(Queues {
            inbox: ctx.store.inbox_len().await?,
            jobs: ctx.store.jobs_depth().await?,
            index_backlog: ctx.store.index_backlog(None).await?,
            dead_letters: ctx.store.dead_letter_count().await?,
        })
    }
    .await
    .ok();
    // Addresses (the operator's details) only for admins.
    let admin = ctx.access.is_admin(&ev.sender);
    let lines: Vec<String> = reports.iter().map(|r| r.line(admin)).collect();
    Ok(strings::status(&lines, queues.as_ref(), ctx.started.elapsed()))
}
