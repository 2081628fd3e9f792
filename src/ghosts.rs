//! The configured coding agents (`[agents.<name>]`) and their ghost users `@<ghost_prefix><name>`:
//! who they are, the rooms they may use, and what their API shares at run time (the per-token rate
//! limit, the inbox wake-ups, short-lived caches). Only these ghosts exist.

use crate::access::Glob;
use crate::config::Config;
use crate::registration::Namespace;
use governor::{DefaultKeyedRateLimiter, Quota};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One configured coding agent.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    /// Its ghost, `@<ghost_prefix><name>:<server>`.
    pub user_id: OwnedUserId,
    pub display_name: String,
    pub avatar: Option<String>,
    pub rooms: RoomPolicy,
}

/// The rooms an agent may use: its `rooms` globs over room ids and aliases.
#[derive(Debug)]
pub struct RoomPolicy {
    globs: Vec<(String, Glob)>,
}

impl RoomPolicy {
    pub fn new(globs: &[String]) -> Result<Self, String> {
        Ok(Self { globs: globs.iter().map(|g| Ok((g.clone(), Glob::new(g)?))).collect::<Result<_, String>>()? })
    }

    /// Every room (`*`): nothing about a room needs to be known.
    pub fn any_room(&self) -> bool {
        self.globs.iter().any(|(g, _)| g == "*")
    }

    /// Whether some glob is about aliases, so a room's aliases must be known to decide.
    pub fn names_aliases(&self) -> bool {
        self.globs.iter().any(|(g, _)| g.starts_with('#'))
    }

    /// May the agent use the room with this id and these (canonical and alternative) aliases?
    pub fn allows(&self, room_id: &str, aliases: &[String]) -> bool {
        self.globs.iter().any(|(g, glob)| match g.chars().next() {
            Some('#') => aliases.iter().any(|a| glob.is_match(a)),
            _ => glob.is_match(room_id),
        })
    }
}

/// Every coding agent, and what their API shares: the rate limit, the inbox wake-ups, caches.
pub struct Agents {
    by_name: HashMap<String, Arc<Agent>>,
    /// Per-token request rate (`agent_api.requests_per_second`, `burst`).
    limiter: DefaultKeyedRateLimiter<String>,
    /// Woken when a message lands in that agent's inbox.
    inbox_signals: HashMap<String, Arc<Notify>>,
    /// Alias → room id, as resolved.
    pub alias_rooms: TtlMap<String, OwnedRoomId>,
    /// Room → its canonical and alternative aliases.
    pub room_aliases: TtlMap<OwnedRoomId, Vec<String>>,
    /// Room → how many users are joined (a direct chat has two).
    pub members: TtlMap<OwnedRoomId, usize>,
    /// Progress messages being edited, by id, with when each was last touched (bounded: the
    /// least recently touched is let go, and taken up again from the database when updated).
    pub progress: Mutex<HashMap<String, (crate::progress::Progress, Instant)>>,
    pub inbox_max: u64,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").field("agents", &self.by_name.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Agents {
    pub fn from_config(config: &Config, namespace: &Namespace) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        let mut inbox_signals = HashMap::new();
        for (name, c) in &config.agents {
            let user_id = namespace.ghost(name).ok_or_else(|| format!("agents.{name}: not a valid ghost name"))?;
            let rooms = RoomPolicy::new(&c.rooms).map_err(|e| format!("agents.{name}.rooms: {e}"))?;
            let agent = Agent {
                name: name.clone(),
                user_id,
                display_name: c.display_name.clone(),
                avatar: c.avatar.clone(),
                rooms,
            };
            by_name.insert(name.clone(), Arc::new(agent));
            inbox_signals.insert(name.clone(), Arc::new(Notify::new()));
        }
        let api = &config.agent_api;
        let per_second = NonZeroU32::new(api.requests_per_second).ok_or("agent_api.requests_per_second is 0")?;
        let burst = NonZeroU32::new(api.burst).ok_or("agent_api.burst is 0")?;
        Ok(Self {
            by_name,
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            inbox_signals,
            alias_rooms: TtlMap::default(),
            room_aliases: TtlMap::default(),
            members: TtlMap::default(),
            progress: Mutex::default(),
            inbox_max: api.inbox_max,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Agent>> {
        self.by_name.get(name)
    }

    /// The agent whose ghost `user` is; `None` for everyone else, unconfigured ghosts included.
    pub fn by_user(&self, user: &UserId) -> Option<&Arc<Agent>> {
        self.by_name.values().find(|a| a.user_id == user)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.by_name.values()
    }

    /// Counts one request of token `token_id`; `Err(wait)` when it is over its rate.
    pub fn check_rate(&self, token_id: &str) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        // Forget tokens that have been quiet long enough to be full again, so the map stays small.
        if self.limiter.len() > 1000 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&token_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    pub fn inbox_signal(&self, agent: &str) -> Option<&Arc<Notify>> {
        self.inbox_signals.get(agent)
    }
}

/// How long [`TtlMap`] entries are trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries of a [`TtlMap`] before its stale ones are dropped.
const CACHE_MAX: usize = 1000;

/// A small map whose entries expire after [`CACHE_TTL`].
pub struct TtlMap<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for TtlMap<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V: Clone> TtlMap<K, V> {
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.0.lock().expect("not poisoned");
        map.get(key).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut map = self.0.lock().expect("not poisoned");
        if map.len() >= CACHE_MAX {
            map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        map.insert(key, (value, Instant::now()));
    }

    pub fn remove(&self, key: &K) {
        self.0.lock().expect("not poisoned").remove(key);
    }
}

impl Agents {
    /// Someone joined or left `room`: its member count is stale.
    pub fn forget_members(&self, room: &RoomId) {
        self.members.remove(&room.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_globs_match_ids_and_aliases() {
        let p = RoomPolicy::new(&["#dev:x.y".into(), "#proj-*:x.y".into(), "!fixed:x.y".into()]).unwrap();
        assert!(!p.any_room() && p.names_aliases());
        assert!(p.allows("!other", &["#dev:x.y".into()]));
        assert!(p.allows("!other", &["#general:x.y".into(), "#proj-a:x.y".into()]));
        assert!(p.allows("!fixed:x.y", &[]));
        assert!(!p.allows("!other", &["#devs:x.y".into()]));
        // An alias glob never matches a room id, nor an id glob an alias.
        assert!(!p.allows("#dev:x.y", &[]));
        let any = RoomPolicy::new(&["*".into()]).unwrap();
        assert!(any.any_room() && any.allows("!anything", &[]));
    }

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            "[homeserver]\nserver_name = \"x.y\"\n[appservice]\nas_token = \"a\"\nhs_token = \"h\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn only_configured_agents_are_known() {
        let c = config("[agents.pi]\n[agents.claude]\ndisplay_name = \"Claude Code\"\n");
        let agents = Agents::from_config(&c, &Namespace::from_config(&c).unwrap()).unwrap();
        let pi = agents.by_user(<&UserId>::try_from("@agent-pi:x.y").unwrap()).unwrap();
        assert_eq!((pi.name.as_str(), pi.display_name.as_str()), ("pi", "pi"));
        assert_eq!(agents.get("claude").unwrap().display_name, "Claude Code");
        assert!(agents.by_user(<&UserId>::try_from("@agent-bob:x.y").unwrap()).is_none());
        assert!(agents.by_user(<&UserId>::try_from("@agent:x.y").unwrap()).is_none());
    }

    #[test]
    fn the_rate_limit_allows_the_burst_then_says_how_long_to_wait() {
        let c = config("[agents.pi]\n[agent_api]\nrequests_per_second = 20\nburst = 5\n");
        let agents = Agents::from_config(&c, &Namespace::from_config(&c).unwrap()).unwrap();
        for _ in 0..5 {
            agents.check_rate("t1").unwrap();
        }
        let wait = agents.check_rate("t1").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(50), "{wait:?}");
        // Another token has its own allowance.
        agents.check_rate("t2").unwrap();
    }
}
