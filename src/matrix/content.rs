//! Message contents the agent sends: Markdown rendered to `formatted_body`, replies that stay in
//! the trigger's thread, and edits.

use ruma::EventId;
use ruma::events::room::message::{
    AddMentions, ForwardThread, OriginalRoomMessageEvent, ReplacementMetadata, RoomMessageEventContent,
};

/// A notice replying to `trigger` (in its thread, if it is threaded), mentioning its sender.
/// Notices are what bots send, and what other bots ignore.
pub fn notice_reply(markdown: &str, trigger: &OriginalRoomMessageEvent) -> RoomMessageEventContent {
    RoomMessageEventContent::notice_markdown(markdown).make_reply_to(trigger, ForwardThread::Yes, AddMentions::Yes)
}

/// Like [`notice_reply`], as plain text (`m.text`), for conversational answers.
pub fn text_reply(markdown: &str, trigger: &OriginalRoomMessageEvent) -> RoomMessageEventContent {
    RoomMessageEventContent::text_markdown(markdown).make_reply_to(trigger, ForwardThread::Yes, AddMentions::Yes)
}

/// An `m.replace` edit of `target` with new Markdown text. Edits carry the text of slow work
/// (model answers, coding agents' progress): raw HTML in it is shown as text (invariant 11).
pub fn edit_content(target: &EventId, markdown: &str) -> RoomMessageEventContent {
    super::markdown::content(markdown, true).make_replacement(ReplacementMetadata::new(target.to_owned(), None))
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
        let v = serde_json::to_value(notice_reply("**pong**", &t)).unwrap();
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
        let v = serde_json::to_value(notice_reply("pong", &t)).unwrap();
        assert_eq!(v["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(v["m.relates_to"]["event_id"], "$root");
        // Shown in the thread; clients without threads show it as a reply to the trigger.
        assert_eq!(v["m.relates_to"]["m.in_reply_to"]["event_id"], "$trigger");
    }

    #[test]
    fn edits_carry_new_content_and_a_star_body() {
        let target = <&EventId>::try_from("$orig").unwrap();
        let v = serde_json::to_value(edit_content(target, "new *text*")).unwrap();
        assert_eq!(v["m.relates_to"]["rel_type"], "m.replace");
        assert_eq!(v["m.relates_to"]["event_id"], "$orig");
        assert_eq!(v["m.new_content"]["body"], "new *text*");
        assert!(v["body"].as_str().unwrap().starts_with("* "));
        let v = serde_json::to_value(edit_content(target, "**x** <img src=\"mxc://evil/y\">")).unwrap();
        let html = v["m.new_content"]["formatted_body"].as_str().unwrap();
        assert!(html.contains("<strong>x</strong>") && !html.contains("<img"), "{html}");
    }
}
