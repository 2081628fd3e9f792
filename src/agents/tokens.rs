//! Coding-agent bearer tokens: `cat1_<id>_<secret>`. The id finds the row; only a SHA-256 of the
//! secret is stored, compared in constant time. One live token per agent: rotation replaces it in
//! one transaction, so the old one stops working at once.

use super::{Agent, Agents};
use crate::config::Config;
use crate::secret::Secret;
use crate::store::{Store, StoreError, TokenStored};
use sha2::{Digest, Sha256};
use std::sync::Arc;

const PREFIX: &str = "cat1_";

/// A token just made: shown once, then only its hash exists.
pub struct NewToken {
    pub token: Secret,
    pub token_id: String,
    pub secret_hash: String,
}

pub fn generate() -> NewToken {
    use rand::distr::{Alphanumeric, SampleString};
    let token_id: String = (0..16).map(|_| format!("{:x}", rand::random::<u8>() & 0xf)).collect();
    let secret = Alphanumeric.sample_string(&mut rand::rng(), 43);
    NewToken { token: Secret::new(format!("{PREFIX}{token_id}_{secret}")), secret_hash: hash(&secret), token_id }
}

/// `(id, secret)` of a token of our shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a presented token turned out to be.
#[derive(Debug)]
pub enum Verdict {
    /// The token of this agent, with its id (the rate limit's key).
    Valid { agent: Arc<Agent>, token_id: String },
    /// Not a token we issued, revoked, or of an agent no longer configured.
    Unknown,
}

/// Checks a presented token against the stored hashes.
pub async fn verify(store: &Store, agents: &Agents, token: &str) -> Result<Verdict, StoreError> {
    let Some((id, secret)) = parse(token) else { return Ok(Verdict::Unknown) };
    let Some(stored) = store.agent_token(id).await? else { return Ok(Verdict::Unknown) };
    if !Secret::new(stored.secret_hash).matches(&hash(secret)) {
        return Ok(Verdict::Unknown);
    }
    Ok(match agents.get(&stored.agent) {
        Some(agent) => Verdict::Valid { agent: agent.clone(), token_id: id.to_owned() },
        None => Verdict::Unknown,
    })
}

/// `conclave-agent token --agent NAME [--rotate]`: prints a fresh token alone on stdout (the rest
/// goes to stderr). `Ok(false)` when it refuses: an unknown agent, or one that has a token already
/// and no `--rotate`.
pub async fn issue(config: &Config, name: &str, rotate: bool) -> anyhow::Result<bool> {
    if !config.agents.contains_key(name) {
        let known: Vec<&str> = config.agents.keys().map(String::as_str).collect();
        eprintln!(
            "error: no coding agent {name:?} in the config (configured: {}); add an [agents.{name}] table",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
        return Ok(false);
    }
    let store = Store::connect(config.database.url.expose()).await?;
    let new = generate();
    let stored = store.agent_token_store(name, &new.token_id, &new.secret_hash, rotate).await;
    store.close().await;
    match stored? {
        TokenStored::Exists => {
            eprintln!(
                "error: agent {name:?} already has a token; `--rotate` makes a new one (the old one stops working at once)"
            );
            Ok(false)
        }
        TokenStored::Stored => {
            println!("{}", new.token.expose());
            eprintln!(
                "{} for agent {name:?}: give it to the agent as CONCLAVE_AGENT_TOKEN; it is not shown again",
                if rotate { "new token (the old one is revoked)" } else { "token" }
            );
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_back_and_only_their_hash_is_kept() {
        let t = generate();
        let (id, secret) = parse(t.token.expose()).unwrap();
        assert_eq!(id, t.token_id);
        assert_eq!(hash(secret), t.secret_hash);
        assert!(!t.secret_hash.contains(secret));
        assert_ne!(generate().token.expose(), t.token.expose());
        assert_eq!(format!("{:?}", t.token), "\"***\"");
    }

    #[test]
    fn foreign_shapes_are_not_tokens() {
        for bad in ["", "cat1_", "cat1_abc_def", "cat1_0123456789abcdef_", "bearer", "cat2_0123456789abcdef_x"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse("cat1_0123456789abcdef_s3cret").is_some());
    }
}
