//! Message contents the agent sends: [`Md`] (so outside text in them was escaped or marked as
//! someone else's Markdown) rendered to `formatted_body` by [`super::markdown`], which shows raw
//! HTML as text (invariant 11); replies that stay in the trigger's thread, and edits.

use super::markdown::{self, Md};
use ruma::EventId;
use ruma::events::Mentions;
use ruma::events::room::message::{
    AddMentions, ForwardThread, MessageType, OriginalRoomMessageEvent, ReplacementMetadata, RoomMessageEventContent,
};

/// A notice replying to `trigger` (in its thread, if it is threaded), mentioning its sender.
/// Notices are what bots send, and what other bots ignore.
pub fn notice_reply(md: &Md, trigger: &OriginalRoomMessageEvent) -> RoomMessageEventContent {
    markdown::content(md, true).make_reply_to(trigger, ForwardThread::Yes, AddMentions::Yes)
}

/// Like [`notice_reply`], as plain text (`m.text`), for conversational answers.
pub fn text_reply(md: &Md, trigger: &OriginalRoomMessageEvent) -> RoomMessageEventContent {
    markdown::content(md, false).make_reply_to(trigger, ForwardThread::Yes, AddMentions::Yes)
}

/// A `matrix.to` link to `event` in `room`. Room ids carry no server since room version 12, so
/// the link names one that can serve it (`via`: ours, which the agent's rooms are all on).
pub fn permalink(room: &str, event: &str, via: &str) -> String {
    format!("https://matrix.to/#/{room}/{event}?via={via}")
}

/// A notice to the whole room.
pub fn notice(md: &Md) -> RoomMessageEventContent {
    markdown::content(md, true)
}

/// An `m.replace` edit of `target` with new Markdown text; `mentions` are the original's, kept
/// in the new content (and not notified again).
pub fn edit_content(target: &EventId, md: &Md, mentions: Option<Mentions>) -> RoomMessageEventContent {
    let mut new = markdown::content(md, true);
    if let Some(mentions) = &mentions {
        new = new.add_mentions(mentions.clone());
    }
    let mut edit = new.make_replacement(ReplacementMetadata::new(target.to_owned(), mentions));
    // ruma gives a plain edit an empty HTML fallback ("* "): a client without edits would show
    // just that, so the plain `* body` stands alone.
    if let MessageType::Notice(notice) = &mut edit.msgtype
        && notice.formatted.as_ref().is_some_and(|f| f.body.trim() == "*")
    {
        notice.formatted = None;
    }
    edit
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn trigger(content: Value) -> OriginalRoomMessageEvent {
        serde_json::from_value(json!({
            "type": "m.room.message", "event_id": "$trigger", "sender": "@alice:x.y",
            "room_id": "!room", "origin_server_ts": 1, "content": content,
        }))
        .unwrap()
    }

    #[test]
    fn reply_renders_markdown_and_points_at_the_trigger() {
        let t = trigger(json!({"msgtype": "m.text", "body": "!ping"}));
        let v = serde_json::to_value(notice_reply(&Md::lit("**pong**"), &t)).unwrap();
        assert_eq!(v["msgtype"], "m.notice");
        assert_eq!(v["format"], "org.matrix.custom.html");
        assert!(v["formatted_body"].as_str().unwrap().contains("<strong>pong</strong>"));
        assert_eq!(v["m.relates_to"]["m.in_reply_to"]["event_id"], "$trigger");
        assert!(v["m.relates_to"].get("rel_type").is_none());
        assert_eq!(v["m.mentions"]["user_ids"][0], "@alice:x.y");
    }

    #[test]
    fn reply_to_a_threaded_trigger_stays_in_the_thread() {
        let t = trigger(json!({
            "msgtype": "m.text", "body": "!ping",
            "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                             "is_falling_back": true, "m.in_reply_to": {"event_id": "$root"}},
        }));
        let v = serde_json::to_value(notice_reply(&Md::lit("pong"), &t)).unwrap();
        assert_eq!(v["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(v["m.relates_to"]["event_id"], "$root");
        // Shown in the thread; clients without threads show it as a reply to the trigger.
        assert_eq!(v["m.relates_to"]["m.in_reply_to"]["event_id"], "$trigger");
    }

    #[test]
    fn edits_carry_new_content_and_a_star_body() {
        let target = <&EventId>::try_from("$orig").unwrap();
        let v = serde_json::to_value(edit_content(target, &Md::lit("new *text*"), None)).unwrap();
        assert_eq!(v["m.relates_to"]["rel_type"], "m.replace");
        assert_eq!(v["m.relates_to"]["event_id"], "$orig");
        assert_eq!(v["m.new_content"]["body"], "new *text*");
        assert!(v["body"].as_str().unwrap().starts_with("* "));
        let v = serde_json::to_value(edit_content(
            target,
            &Md::untrusted_markdown("**x** <img src=\"mxc://evil/y\">"),
            None,
        ))
        .unwrap();
        let html = v["m.new_content"]["formatted_body"].as_str().unwrap();
        assert!(html.contains("<strong>x</strong>") && !html.contains("<img"), "{html}");
    }

    #[test]
    fn an_edit_keeps_the_originals_mentions_in_its_new_content() {
        let target = <&EventId>::try_from("$orig").unwrap();
        let alice = ruma::user_id!("@alice:x.y").to_owned();
        let v = serde_json::to_value(edit_content(target, &Md::lit("more"), Some(Mentions::with_user_ids([alice]))))
            .unwrap();
        assert_eq!(v["m.new_content"]["m.mentions"]["user_ids"][0], "@alice:x.y", "{v}");
        assert!(v["m.mentions"].get("user_ids").is_none_or(|u| u.as_array().unwrap().is_empty()), "no new ping: {v}");
        assert!(v.get("formatted_body").is_none(), "a plain edit has no empty HTML fallback: {v}");
        assert_eq!(v["body"], "* more");
    }

    #[test]
    fn replies_show_raw_html_as_text() {
        let t = trigger(json!({"msgtype": "m.text", "body": "!ping"}));
        let v = serde_json::to_value(notice_reply(
            &Md::untrusted_markdown("**ok** <img src=\"mxc://evil/x\"> <font color=red>x</font>"),
            &t,
        ))
        .unwrap();
        let html = v["formatted_body"].as_str().unwrap();
        assert!(html.contains("<strong>ok</strong>") && !html.contains("<img") && !html.contains("<font"), "{html}");
        assert!(html.contains("&lt;img"), "{html}");
    }
}
