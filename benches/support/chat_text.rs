//! Chat-like text for the benchmarks: a deterministic generator, so every run embeds the same
//! messages.
#![allow(dead_code)] // each benchmark uses a different part

/// A deterministic generator (splitmix64), so every run embeds the same texts.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

const OPENERS: &[&str] = &[
    "ok so",
    "quick question:",
    "fyi",
    "heads up,",
    "I think",
    "looks like",
    "has anyone seen why",
    "btw",
    "so",
    "hmm,",
    "update:",
    "can someone check if",
];
const SUBJECTS: &[&str] = &[
    "the login redirect",
    "the nightly backup",
    "the staging deploy",
    "our CI pipeline",
    "the Planka board",
    "the search index",
    "the postgres migration",
    "the new onboarding flow",
    "the GPU pod",
    "the nginx config",
    "the release notes",
    "the flaky e2e test",
    "the rate limiter",
    "Chromium in the container",
    "the invoice export",
];
const VERBS: &[&str] = &[
    "fails",
    "works again",
    "is slow",
    "times out",
    "needs a review",
    "got merged",
    "broke after the upgrade",
    "was rolled back",
    "looks fine now",
    "is blocked on",
    "depends on",
    "still leaks memory",
];
const TAILS: &[&str] = &[
    "since yesterday",
    "on the second try",
    "only in Firefox",
    "when the cache is cold",
    "after 2am",
    "for new users",
    "in the EU region",
    "with the old token",
    "behind the proxy",
    "in about ten percent of runs",
    "on Mondays",
    "for large rooms",
    "when two people edit at once",
    "and nobody noticed",
];
const FILLER: &[&str] = &[
    "we",
    "should",
    "probably",
    "look",
    "at",
    "it",
    "before",
    "the",
    "demo",
    "because",
    "customers",
    "will",
    "notice",
    "and",
    "then",
    "maybe",
    "write",
    "a",
    "test",
    "for",
    "that",
    "case",
    "I",
    "can",
    "take",
    "it",
    "tomorrow",
    "unless",
    "someone",
    "else",
    "wants",
    "to",
    "pair",
    "on",
    "this",
    "the",
    "logs",
    "say",
    "nothing",
    "useful",
    "yet",
];

/// A chat message of 5 to 60 words.
pub fn message(rng: &mut Rng) -> String {
    let target = 5 + rng.below(56);
    let mut words: Vec<&str> = Vec::with_capacity(target + 8);
    while words.len() < target {
        for part in [rng.pick(OPENERS), rng.pick(SUBJECTS), rng.pick(VERBS), rng.pick(TAILS)] {
            words.extend(part.split(' '));
        }
        for _ in 0..rng.below(12) {
            words.push(rng.pick(FILLER));
        }
    }
    words.truncate(target);
    words.join(" ")
}

/// A `!search` query of a few words.
pub fn query(rng: &mut Rng) -> String {
    format!("why {} {}", rng.pick(SUBJECTS), rng.pick(VERBS))
}
