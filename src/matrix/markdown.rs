//! Markdown from untrusted text (coding-agent posts, model output) to `formatted_body`, with raw
//! HTML shown as text and images turned into links (invariant 11): the HTML holds only the tags
//! the renderer itself made.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
use ruma::events::room::message::RoomMessageEventContent;

const OPTIONS: Options = Options::ENABLE_TABLES.union(Options::ENABLE_STRIKETHROUGH);

/// The HTML of `markdown`, or `None` when it has no formatting (plain text is sent as is).
pub fn to_html(markdown: &str) -> Option<String> {
    let events = Parser::new_ext(markdown, OPTIONS).map(|event| match event {
        // Raw HTML, block or inline, becomes text: the renderer escapes it.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        // An image would make clients fetch a URL of the sender's choosing: a link instead.
        Event::Start(Tag::Image { dest_url, title, id, .. }) => {
            Event::Start(Tag::Link { link_type: pulldown_cmark::LinkType::Inline, dest_url, title, id })
        }
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        Event::SoftBreak => Event::HardBreak,
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    let html = html.trim_end_matches('\n');
    // One paragraph is inline text (the spec's advice): no wrapping <p>.
    let inline = html
        .strip_prefix("<p>")
        .and_then(|h| h.strip_suffix("</p>"))
        .filter(|inner| !inner.contains("<p>"))
        .unwrap_or(html);
    (inline != escape(markdown.trim()).replace('\n', "<br />\n")).then(|| inline.to_owned())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    pulldown_cmark::html::push_html(&mut out, std::iter::once(Event::Text(CowStr::Borrowed(text))));
    out
}

/// `text` as one inline code span, whatever backticks it holds: the fence is one backtick longer
/// than its longest run, and padded when the text begins or ends with one (CommonMark's rule).
/// For names from outside (a model, a card) put into the agent's Markdown.
pub fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// A text (or notice) message of `markdown`, its HTML made by [`to_html`].
pub fn content(markdown: &str, notice: bool) -> RoomMessageEventContent {
    match (to_html(markdown), notice) {
        (Some(html), true) => RoomMessageEventContent::notice_html(markdown, html),
        (Some(html), false) => RoomMessageEventContent::text_html(markdown, html),
        (None, true) => RoomMessageEventContent::notice_plain(markdown),
        (None, false) => RoomMessageEventContent::text_plain(markdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_span_holds_any_name_whole() {
        for name in ["llama3", "a`b", "`start", "end`", "x` **bold** [l](https://evil) `y", "``"] {
            let html = to_html(&format!("uses {}.", code(name))).unwrap();
            let inner = html.strip_prefix("uses <code>").and_then(|h| h.strip_suffix("</code>.")).unwrap();
            assert_eq!(inner, escape(name).trim(), "{name:?} → {html}");
        }
        assert_eq!(code("two\nlines"), "`two lines`");
    }

    #[test]
    fn plain_text_has_no_html() {
        assert_eq!(to_html("tests green"), None);
        assert_eq!(to_html("a < b & c"), None);
        assert_eq!(to_html("two\nlines"), None);
    }

    #[test]
    fn markdown_becomes_html() {
        assert_eq!(to_html("**bold** and `code`").unwrap(), "<strong>bold</strong> and <code>code</code>");
        let list = to_html("- a\n- b").unwrap();
        assert!(list.starts_with("<ul>") && list.contains("<li>a</li>"), "{list}");
        assert!(to_html("one\n\ntwo").unwrap().contains("<p>one</p>"));
    }

    #[test]
    fn raw_html_is_shown_as_text_never_as_tags() {
        let cases = [
            "<img src=\"mxc://evil/x\">",
            "hi <font color=red>there</font>",
            "<a href=\"https://evil\">click</a>",
            "<div>\n<b>block</b>\n</div>",
            "**x** <script>alert(1)</script>",
        ];
        for md in cases {
            let html = to_html(md).unwrap_or_else(|| escape(md));
            for tag in ["<img", "<font", "<a ", "<div", "<b>", "<script"] {
                assert!(!html.contains(tag), "{md:?} gave {html:?}");
            }
            assert!(html.contains("&lt;"), "{md:?} gave {html:?}");
        }
    }

    #[test]
    fn images_become_links() {
        let html = to_html("see ![diagram](https://example.org/d.png)").unwrap();
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("<a href=\"https://example.org/d.png\">diagram</a>"), "{html}");
    }

    #[test]
    fn content_is_text_or_notice() {
        let v = serde_json::to_value(content("*hi*", true)).unwrap();
        assert_eq!(v["msgtype"], "m.notice");
        assert_eq!(v["body"], "*hi*");
        assert_eq!(v["formatted_body"], "<em>hi</em>");
        let v = serde_json::to_value(content("hi", false)).unwrap();
        assert_eq!(v["msgtype"], "m.text");
        assert!(v.get("formatted_body").is_none());
    }
}
