//! `!model`, `!prompt`, `!usage`: per-room model and instructions (set by admins), token use.

use crate::context::Context;
use crate::handler::HandleError;
use crate::matrix::markdown::Md;
use crate::store::{RoomSettings, UsageTotals, today};
use crate::strings;
use crate::syntax::PromptChange;
use ruma::events::room::message::OriginalRoomMessageEvent;

pub async fn model(ctx: &Context, ev: &OriginalRoomMessageEvent, name: Option<&str>) -> Result<Md, HandleError> {
    let mut settings = ctx.store.room_settings(ev.room_id.as_str()).await?;
    let default = ctx.config.llm.chat_model.as_str();
    let Some(name) = name else {
        let current = settings.model.as_deref().unwrap_or(default);
        let available = ctx.llm.models().await.map_err(|e| e.public());
        return Ok(strings::models(current, available.as_deref().map_err(Clone::clone)));
    };
    if !ctx.access.is_admin(&ev.sender) {
        return Ok(strings::admins_only("choose this room's model"));
    }
    if name.eq_ignore_ascii_case("reset") || name.eq_ignore_ascii_case("default") {
        settings.model = None;
        ctx.store.set_room_settings(ev.room_id.as_str(), &settings).await?;
        return Ok(strings::model_reset(default));
    }
    // Only a model the server has: a typo would otherwise break every answer in the room.
    match ctx.llm.models().await {
        Ok(models) if models.iter().any(|m| m == name) => {
            settings.model = Some(name.to_owned());
            ctx.store.set_room_settings(ev.room_id.as_str(), &settings).await?;
            Ok(strings::model_set(name))
        }
        Ok(models) => Ok(strings::unknown_model(name, &models)),
        Err(e) => Ok(strings::cannot_check_model(&e.public())),
    }
}

pub async fn prompt(ctx: &Context, ev: &OriginalRoomMessageEvent, change: &PromptChange) -> Result<Md, HandleError> {
    let mut settings: RoomSettings = ctx.store.room_settings(ev.room_id.as_str()).await?;
    if *change == PromptChange::Show {
        return Ok(match &settings.prompt {
            Some(p) => strings::prompt_shown(p, true),
            None => strings::prompt_shown(&crate::prompts::prompt(&ctx.config, "chat"), false),
        });
    }
    if !ctx.access.is_admin(&ev.sender) {
        return Ok(strings::admins_only("change this room's instructions"));
    }
    let reply = match change {
        PromptChange::Set(text) => {
            settings.prompt = Some(text.clone());
            strings::prompt_set()
        }
        _ => {
            settings.prompt = None;
            strings::prompt_reset()
        }
    };
    ctx.store.set_room_settings(ev.room_id.as_str(), &settings).await?;
    Ok(reply)
}

pub async fn usage(ctx: &Context, ev: &OriginalRoomMessageEvent) -> Result<Md, HandleError> {
    let row = |u: UsageTotals| (u.requests, u.prompt_tokens, u.completion_tokens);
    let (room, user) = (ev.room_id.as_str(), ev.sender.as_str());
    let today = today();
    Ok(strings::usage(
        [row(ctx.store.room_usage(room, today).await?), row(ctx.store.room_usage(room, today - 29).await?)],
        [row(ctx.store.user_usage(user, today).await?), row(ctx.store.user_usage(user, today - 29).await?)],
    ))
}
