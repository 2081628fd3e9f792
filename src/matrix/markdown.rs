//! The Markdown the agent sends ([`Md`]) and its rendering to `formatted_body`.
//!
//! Every message goes out as an [`Md`], and an `Md` is made only of the agent's own words
//! ([`Md::lit`], the literals of [`md!`]) and of outside text put in through a door that says how:
//! escaped ([`Md::text`], [`Md::quote`], an argument of [`md!`]), as code ([`Md::code`]), as a link
//! ([`Md::url`], [`Md::link`]), or as someone else's Markdown ([`Md::untrusted_markdown`]). So a
//! card named `[x](https://evil)` cannot become a link in the agent's reply.
//!
//! Rendering shows raw HTML as text and turns images into links (invariant 11): the HTML holds
//! only the tags the renderer itself made, whoever wrote the Markdown.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};
use ruma::events::room::message::RoomMessageEventContent;
use std::borrow::Cow;
use std::fmt;

pub use crate::md;

/// Markdown the agent sends. There is no way to make one of a runtime `String` but the doors
/// below, each named for what it trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Md(String);

impl Md {
    /// The agent's own words.
    pub fn lit(text: &'static str) -> Self {
        Self(text.to_owned())
    }

    /// Outside text shown as itself, within a line: Markdown's characters escaped, line breaks
    /// made spaces, `@room` kept from notifying the room.
    pub fn text(text: &str) -> Self {
        Self(escape(text))
    }

    /// Outside text of several lines (a room's instructions, a card's description) as a block
    /// quote: each line escaped as by [`Md::text`], without its indentation (which would make
    /// a code block, where escapes show).
    pub fn quote(text: &str) -> Self {
        Self(text.lines().map(|line| format!("> {}\n", escape(line.trim_start()))).collect())
    }

    /// Outside text as one inline code span, whatever backticks it holds: the fence is one
    /// backtick longer than its longest run, and padded when the text begins or ends with one
    /// (CommonMark's rule). For names (a model, a card id) shown as code.
    pub fn code(text: &str) -> Self {
        let text = defuse_room_mention(&text.replace(['\n', '\r'], " "));
        let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest + 1);
        let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
        Self(format!("{fence}{pad}{text}{pad}{fence}"))
    }

    /// `url` as a link (`<url>`) when it is an http(s) URL that cannot leave the brackets; any
    /// other as text.
    pub fn url(url: &str) -> Self {
        if linkable(url) { Self(format!("<{url}>")) } else { Self::text(url) }
    }

    /// `label` linking to `url`, under the same condition as [`Md::url`]; else both as text.
    pub fn link(label: &str, url: &str) -> Self {
        let label = escape(label);
        match linkable(url) {
            // Parentheses in a bare destination must balance; in `<…>` anything goes.
            true if url.contains(['(', ')']) => Self(format!("[{label}](<{url}>)")),
            true => Self(format!("[{label}]({url})")),
            false => Self(format!("{label} ({})", escape(url))),
        }
    }

    /// Markdown written by someone else (a model's answer, a coding agent's post), sent as
    /// Markdown: it may format and link as it likes, but [`to_html`] still shows its raw HTML as
    /// text and its images as links. The name is the trust decision, made where it is called.
    pub fn untrusted_markdown(markdown: impl Into<String>) -> Self {
        Self(markdown.into())
    }

    pub fn push(&mut self, more: &Md) {
        self.0.push_str(&more.0);
    }

    pub fn push_lit(&mut self, more: &'static str) {
        self.0.push_str(more);
    }

    /// `parts` one after another, `sep` between them.
    pub fn join(parts: impl IntoIterator<Item = Md>, sep: &'static str) -> Self {
        Self(parts.into_iter().map(|p| p.0).collect::<Vec<_>>().join(sep))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What [`md!`] makes of its literal and its arguments (already [`ToMd`]); not for other use.
    #[doc(hidden)]
    pub fn __from_md_macro(args: fmt::Arguments<'_>) -> Self {
        Self(fmt::format(args))
    }
}

/// Reading is free (`contains`, `lines`, …); only making an `Md` goes through the doors.
impl std::ops::Deref for Md {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Md {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value [`md!`] puts into its literal: outside text escaped as by [`Md::text`], numbers as
/// written, an [`Md`] as it is.
pub trait ToMd {
    fn to_md(&self) -> Cow<'_, str>;
}

impl ToMd for Md {
    fn to_md(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.0)
    }
}

impl ToMd for str {
    fn to_md(&self) -> Cow<'_, str> {
        Cow::Owned(escape(self))
    }
}

impl ToMd for String {
    fn to_md(&self) -> Cow<'_, str> {
        Cow::Owned(escape(self))
    }
}

impl<T: ToMd + ?Sized> ToMd for &T {
    fn to_md(&self) -> Cow<'_, str> {
        (**self).to_md()
    }
}

macro_rules! numbers_to_md {
    ($($t:ty),*) => {$(
        impl ToMd for $t {
            fn to_md(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
numbers_to_md!(i32, i64, u32, u64, usize);

/// [`Md`] from a literal of the agent's words, each `{}` filled with an argument through
/// [`ToMd`] (outside text escaped, numbers as written, `Md` as it is):
///
/// ```
/// use conclave_agent::matrix::markdown::{Md, md};
/// let list = "[x](https://evil)";
/// let text = md!("Moved {} to “{}” ({} cards).", Md::code("#12"), list, 3);
/// assert_eq!(text.as_str(), r"Moved `#12` to “\[x\]\(https://evil\)” (3 cards).");
/// ```
///
/// The literal may hold only `{}` placeholders, outside code spans; the compiler refuses the
/// others: an inline `{name}` would skip [`ToMd`], `{:?}` would undo the escaping, and in
/// backticks escapes do not count (use [`Md::code`]).
///
/// ```compile_fail
/// let name = "[x](https://evil)";
/// let _ = conclave_agent::md!("Hello {name}");
/// ```
/// ```compile_fail
/// let _ = conclave_agent::md!("uses `{}`", "a` [x](https://evil) `b");
/// ```
#[macro_export]
macro_rules! md {
    ($literal:literal $(, $arg:expr)* $(,)?) => {{
        const _: () = ::core::assert!(
            $crate::matrix::markdown::plain_placeholders($literal),
            "md!: use only {{}} placeholders, and none in backticks (Md::code makes code)"
        );
        $crate::matrix::markdown::Md::__from_md_macro(::core::format_args!(
            $literal $(, $crate::matrix::markdown::ToMd::to_md(&$arg))*
        ))
    }};
}

/// Whether `literal`'s placeholders are all `{}` outside code spans (`{{` and `}}` are text):
/// what [`md!`] asserts at compile time.
#[doc(hidden)]
pub const fn plain_placeholders(literal: &str) -> bool {
    let b = literal.as_bytes();
    // The length of the backtick run that opened the code span we are in; 0 outside one.
    let mut span = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            let start = i;
            while i < b.len() && b[i] == b'`' {
                i += 1;
            }
            let run = i - start;
            if span == 0 {
                span = run;
            } else if span == run {
                span = 0;
            }
            continue;
        }
        let next = if i + 1 < b.len() { b[i + 1] } else { 0 };
        match (b[i], next) {
            (b'{', b'{') | (b'}', b'}') => i += 2,
            (b'{', b'}') if span == 0 => i += 2,
            (b'{' | b'}', _) => return false,
            _ => i += 1,
        }
    }
    true
}

/// The characters that make inline Markdown (emphasis, code, links, images, HTML, entities,
/// tables, strikethrough, headings, quotes); a backslash before any of them shows it as itself.
const SPECIAL: &str = r"\`*_[]()<>#!|~&";

fn escape(text: &str) -> String {
    // A list item (`- `, `+ `, `1. `) or a heading underline (`===`, `---`) if it starts a line.
    let body = text.trim_start();
    let lead = text.len() - body.len();
    let marker = match body.bytes().position(|b| !b.is_ascii_digit()) {
        Some(0) if body.starts_with(['-', '+', '=']) => Some(lead),
        Some(n) if n > 0 && body[n..].starts_with('.') => Some(lead + n),
        _ => None,
    };
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.char_indices() {
        if SPECIAL.contains(c) || marker == Some(i) {
            out.push('\\');
        }
        // Line breaks would start new blocks.
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    defuse_room_mention(&out)
}

/// A zero-width space after the `@` of `@room` (any case): clients without intentional mentions
/// would notify the whole room of it.
fn defuse_room_mention(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        out.push(c);
        if c == '@' && text[i + 1..].get(..4).is_some_and(|w| w.eq_ignore_ascii_case("room")) {
            out.push('\u{200b}');
        }
    }
    out
}

/// An http(s) URL with nothing that ends an autolink or a link destination.
fn linkable(url: &str) -> bool {
    let scheme = |s: &str| url.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    (scheme("https://") || scheme("http://"))
        && !url.contains(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '\\'))
}

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
    (inline != html_escape(markdown.trim()).replace('\n', "<br />\n")).then(|| inline.to_owned())
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    pulldown_cmark::html::push_html(&mut out, std::iter::once(Event::Text(CowStr::Borrowed(text))));
    out
}

/// A text (or notice) message of `md`, its HTML made by [`to_html`].
pub fn content(md: &Md, notice: bool) -> RoomMessageEventContent {
    let markdown = md.as_str();
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

    /// Outside text that would format, link, show an image, mention the room or leave a code span.
    const HOSTILE: &[&str] = &[
        "[x](https://evil)",
        "**b** _i_ ~~s~~",
        "<img src=x onerror=alert(1)>",
        "@room and @ROOM",
        "a ``` b ` c",
        "![i](https://evil/i.png)",
        "<https://evil>",
        "# heading\n- item\n> quote",
        "- item",
        "1. item",
        "---",
        "| a | b |\n|---|---|",
        "&lt;b&gt; &amp;",
        "trailing \\",
    ];

    /// The HTML of `md` as sent (the escaped body when it renders to nothing special).
    fn html(md: &Md) -> String {
        to_html(md).unwrap_or_else(|| html_escape(md))
    }

    fn assert_inert(html: &str, input: &str) {
        for tag in [
            "<a",
            "<strong",
            "<em",
            "<del",
            "<img",
            "<h1",
            "<ul",
            "<ol",
            "<li",
            "<hr",
            "<h2",
            "<blockquote",
            "<table",
            "<code",
            "<pre",
        ] {
            assert!(!html.contains(tag), "{input:?} made {tag}: {html}");
        }
        assert!(!html.to_lowercase().contains("@room"), "{input:?} can notify the room: {html}");
    }

    #[test]
    fn md_escapes_outside_text_so_it_shows_as_itself() {
        for input in HOSTILE {
            let md = md!("Card {} moved by {}.", *input, input.to_string());
            let html = html(&md);
            assert_inert(&html, input);
            // Shown as itself: the visible text is the input (line breaks as spaces).
            let shown = html_escape(&input.replace('\n', " "))
                .replace("@room", "@\u{200b}room")
                .replace("@ROOM", "@\u{200b}ROOM");
            assert!(html.contains(&shown), "{input:?} is not shown as itself: {html}");
            assert_inert(&self::html(&Md::text(input)), input);
        }
        // At the start of the message too, where block syntax could begin.
        for input in HOSTILE {
            assert_inert(&html(&md!("{}", *input)), input);
        }
    }

    #[test]
    fn md_passes_md_and_numbers_as_they_are() {
        let n: i64 = -3;
        let md = md!("**{}** {} {} {{literal}}", Md::lit("ours"), n, &Md::code("a`b"));
        assert_eq!(md.as_str(), "**ours** -3 ``a`b`` {literal}");
        assert_eq!(to_html(&md).unwrap(), "<strong>ours</strong> -3 <code>a`b</code> {literal}");
    }

    #[test]
    fn md_takes_only_plain_placeholders_outside_code() {
        assert!(plain_placeholders("a {} b {} {{x}} `code` {}"));
        assert!(plain_placeholders("no placeholder, “quotes”"));
        for refused in ["{name}", "{0}", "{:?}", "{:>5}", "`{}`", "``a ` {} ``", "x { y", "x } y", "{é}"] {
            assert!(!plain_placeholders(refused), "{refused:?}");
        }
    }

    #[test]
    fn a_code_span_holds_any_name_whole() {
        for name in ["llama3", "a`b", "`start", "end`", "x` **bold** [l](https://evil) `y", "``"] {
            let html = to_html(&md!("uses {}.", Md::code(name))).unwrap();
            let inner = html.strip_prefix("uses <code>").and_then(|h| h.strip_suffix("</code>.")).unwrap();
            assert_eq!(inner, html_escape(name).trim(), "{name:?} → {html}");
        }
        assert_eq!(Md::code("two\nlines").as_str(), "`two lines`");
    }

    #[test]
    fn a_quote_keeps_lines_and_shows_each_as_itself() {
        let md = Md::quote("Be brief.\n  - [x](https://evil) **loud**\n\n<img src=x>\n    indented");
        assert_eq!(md.lines().count(), 5, "{md}");
        let html = to_html(&md).unwrap();
        assert!(html.starts_with("<blockquote>") && html.contains("Be brief.<br />"), "{html}");
        assert!(html.contains("- [x](https://evil) **loud**") && html.contains("&lt;img src=x&gt;"), "{html}");
        for tag in ["<a", "<strong", "<img", "<ul", "<pre", "<code"] {
            assert!(!html.contains(tag), "{tag} in {html}");
        }
    }

    #[test]
    fn urls_are_links_only_when_they_cannot_break_out() {
        assert_eq!(Md::url("https://example.org/a_b?c=1&d").as_str(), "<https://example.org/a_b?c=1&d>");
        assert_eq!(
            to_html(&Md::url("https://example.org/a_b")).unwrap(),
            "<a href=\"https://example.org/a_b\">https://example.org/a_b</a>"
        );
        for hostile in ["https://x/> **b** <y", "https://x/ [l](https://evil)", "javascript:alert(1)", "http://x\\y"] {
            for md in [Md::url(hostile), Md::link("link", hostile)] {
                let html = html(&md);
                assert!(!html.contains("<a") && !html.contains("<strong"), "{hostile:?} → {html}");
            }
        }
        assert_eq!(Md::link("link", "https://matrix.to/#/!r/$e").as_str(), "[link](https://matrix.to/#/!r/$e)");
        let wiki = to_html(&Md::link("[w]", "https://en.wikipedia.org/wiki/Rust_(language)")).unwrap();
        assert_eq!(wiki, "<a href=\"https://en.wikipedia.org/wiki/Rust_(language)\">[w]</a>");
    }

    #[test]
    fn untrusted_markdown_formats_but_shows_raw_html_as_text() {
        let html = to_html(&Md::untrusted_markdown("**bold** <img src=x onerror=alert(1)> <b>b</b>")).unwrap();
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(!html.contains("<img") && !html.contains("<b>") && html.contains("&lt;img"), "{html}");
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
            let html = to_html(md).unwrap_or_else(|| html_escape(md));
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
        let v = serde_json::to_value(content(&Md::lit("*hi*"), true)).unwrap();
        assert_eq!(v["msgtype"], "m.notice");
        assert_eq!(v["body"], "*hi*");
        assert_eq!(v["formatted_body"], "<em>hi</em>");
        let v = serde_json::to_value(content(&Md::lit("hi"), false)).unwrap();
        assert_eq!(v["msgtype"], "m.text");
        assert!(v.get("formatted_body").is_none());
    }
}
