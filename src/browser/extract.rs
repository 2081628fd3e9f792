//! The main text of a page as Markdown: readability-style extraction (dom_smoothie), bounded in
//! length before it goes anywhere near a model.

/// Characters of main text kept; the rest is cut at a line boundary.
pub const MAX_MAIN_TEXT_CHARS: usize = 20_000;

/// The page's main content as Markdown; `fallback_text` (the page's visible text) when
/// readability finds no article. Returns the text and whether it was cut.
pub fn main_text(html: &str, url: &str, fallback_text: &str) -> (String, bool) {
    let config = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Markdown,
        max_elements_to_parse: 50_000,
        ..Default::default()
    };
    let article = dom_smoothie::Readability::new(html, Some(url), Some(config)).and_then(|mut r| r.parse());
    let text = match article {
        Ok(a) if !a.text_content.trim().is_empty() => a.text_content.to_string(),
        _ => fallback_text.to_owned(),
    };
    bound(tidy(&text), MAX_MAIN_TEXT_CHARS)
}

/// Runs of blank lines collapsed, trailing spaces dropped.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

/// At most `max` characters, cut at the last line break before the limit when there is one.
pub fn bound(text: String, max: usize) -> (String, bool) {
    let Some((cut, _)) = text.char_indices().nth(max) else { return (text, false) };
    let head = &text[..cut];
    let end = head.rfind('\n').filter(|&i| i > cut / 2).unwrap_or(cut);
    (head[..end].trim_end().to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_article_is_kept_and_the_chrome_dropped() {
        let html = r#"<html><head><title>Release notes</title></head><body>
            <nav><a href="/">Home</a> <a href="/about">About</a></nav>
            <article><h1>Version 2.0</h1>
            <p>This release adds a <strong>faster parser</strong> and removes the legacy exporter, which
            had been deprecated for two years. Users of the exporter should move to the new JSON output.</p>
            <p>The configuration format is unchanged, so upgrading needs no edits to existing files, and the
            command-line flags keep their meaning. Read on for the details of each change.</p>
            <ul><li>Parser rewritten</li><li>Exporter removed</li></ul></article>
            <footer>Copyright 2026 Example Corp</footer></body></html>"#;
        let (text, cut) = main_text(html, "http://example.org/notes", "fallback");
        assert!(!cut);
        assert!(text.contains("faster parser"), "{text}");
        assert!(text.contains("Exporter removed"), "{text}");
        assert!(text.contains("**faster parser**"), "markdown kept: {text}");
        assert!(!text.contains("Copyright"), "{text}");
    }

    #[test]
    fn a_page_without_an_article_falls_back_to_its_text() {
        let (text, _) = main_text("<html><body></body></html>", "http://example.org/", "just this");
        assert_eq!(text, "just this");
    }

    #[test]
    fn long_text_is_cut_at_a_line_break() {
        let long = (0..1000).map(|i| format!("line {i} of the page")).collect::<Vec<_>>().join("\n");
        let (text, cut) = bound(long, 100);
        assert!(cut);
        assert!(text.chars().count() <= 100);
        assert!(text.ends_with("of the page"), "{text}");
        let (short, cut) = bound("ünïcode".into(), 100);
        assert_eq!((short.as_str(), cut), ("ünïcode", false));
        let (one, cut) = bound("é".repeat(50), 10);
        assert_eq!((one.chars().count(), cut), (10, true));
    }
}
