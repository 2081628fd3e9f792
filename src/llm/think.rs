//! Removes `<think>…</think>` blocks from streamed text, even when a tag is split across chunks.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Feed chunks in order; each call returns the text that may be shown so far.
#[derive(Debug, Default)]
pub struct ThinkFilter {
    inside: bool,
    /// A tail that may be the start of a tag, held back until the next chunk decides.
    pending: String,
}

impl ThinkFilter {
    pub fn push(&mut self, chunk: &str) -> String {
        let mut text = std::mem::take(&mut self.pending);
        text.push_str(chunk);
        let mut out = String::new();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = text.find(tag) {
                if !self.inside {
                    out.push_str(&text[..at]);
                }
                text = text[at + tag.len()..].to_owned();
                self.inside = !self.inside;
                continue;
            }
            // Hold back the longest tail that is a prefix of the tag.
            let keep = (1..tag.len()).rev().find(|&n| text.ends_with(&tag[..n])).unwrap_or(0);
            let cut = text.len() - keep;
            if !self.inside {
                out.push_str(&text[..cut]);
            }
            self.pending = text[cut..].to_owned();
            return out;
        }
    }

    /// The end of the stream: a held-back partial tag was plain text after all.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        if self.inside { String::new() } else { rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&str]) -> String {
        let mut f = ThinkFilter::default();
        let mut out: String = chunks.iter().map(|c| f.push(c)).collect();
        out.push_str(&f.finish());
        out
    }

    #[test]
    fn think_blocks_never_show() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("plain", &["hello ", "world"], "hello world"),
            ("whole block", &["<think>secret</think>answer"], "answer"),
            ("split tags", &["<th", "ink>sec", "ret</thi", "nk>ans", "wer"], "answer"),
            ("text before", &["a<think>x</think>b"], "ab"),
            ("two blocks", &["<think>x</think>a<think>y</think>b"], "ab"),
            ("unclosed", &["ok<think>never closed"], "ok"),
            ("lookalike", &["a <thin", "g> b"], "a <thing> b"),
            ("trailing lt", &["1 <"], "1 <"),
        ];
        for (name, chunks, want) in cases {
            assert_eq!(run(chunks), *want, "{name}");
        }
    }
}
