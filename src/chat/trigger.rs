//! When the agent answers a message that is not a command: it mentions the agent (`m.mentions`),
//! starts with its name (`agent: …`), or is written in a direct chat (the agent and one person).

use crate::context::Context;
use crate::handler::HandleError;
use ruma::events::room::message::OriginalRoomMessageEvent;

/// The question, if the message is addressed to the agent.
pub async fn addressed(
    ctx: &Context,
    ev: &OriginalRoomMessageEvent,
    body: &str,
) -> Result<Option<String>, HandleError> {
    let me = ctx.namespace.sender();
    let named = strip_address(body, me.localpart(), &ctx.config.appservice.display_name);
    let mentioned = ev.content.mentions.as_ref().is_some_and(|m| m.user_ids.contains(me));
    if mentioned || named.is_some() {
        return Ok(Some(named.unwrap_or(body).trim().to_owned()));
    }
    if ctx.is_direct_chat(&ev.room_id).await? {
        return Ok(Some(body.trim().to_owned()));
    }
    Ok(None)
}

/// `"agent: hi"`, `"Agent, hi"`, `"@agent: hi"` → `Some("hi")`: the name (localpart or display
/// name, any case) followed by `:` or `,`. A pill's body is the display name.
pub fn strip_address<'a>(body: &'a str, localpart: &str, display_name: &str) -> Option<&'a str> {
    let text = body.trim_start();
    let text = text.strip_prefix('@').unwrap_or(text);
    for name in [display_name, localpart] {
        if name.is_empty() || text.len() <= name.len() || !text.is_char_boundary(name.len()) {
            continue;
        }
        let (head, rest) = text.split_at(name.len());
        if head.eq_ignore_ascii_case(name) && (rest.starts_with(':') || rest.starts_with(',')) {
            return Some(rest[1..].trim_start()).filter(|q| !q.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        let cases = [
            ("agent: hi", Some("hi")),
            ("Agent, what now?", Some("what now?")),
            ("  @agent: hi", Some("hi")),
            ("AGENT:hi", Some("hi")),
            ("Assistant Bot: hi", Some("hi")),
            ("agents: hi", None),
            ("agent hi", None),
            ("the agent: hi", None),
            ("agent:", None),
            ("hello", None),
            ("é", None),
        ];
        for (body, want) in cases {
            let display = if body.starts_with("Assistant") { "Assistant Bot" } else { "Agent" };
            assert_eq!(strip_address(body, "agent", display), want, "{body:?}");
        }
    }
}
