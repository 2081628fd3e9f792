//! What event handlers share: the store, the backend clients, and the policy derived from config.

use crate::access::Access;
use crate::browser::Browser;
use crate::config::Config;
use crate::llm::LlmClient;
use crate::matrix::{MatrixClient, MatrixError};
use crate::planka::Tasks;
use crate::rag::Rag;
use crate::registration::Namespace;
use crate::store::Store;
use governor::{DefaultKeyedRateLimiter, Quota};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a room's member count is trusted (membership events also clear it).
const MEMBERS_TTL: Duration = Duration::from_secs(60);

pub struct Context {
    pub store: Store,
    pub matrix: MatrixClient,
    pub llm: LlmClient,
    pub namespace: Arc<Namespace>,
    pub access: Access,
    pub config: Config,
    /// The `[llm.fallback]` server, if configured.
    pub fallback: Option<Fallback>,
    /// Woken when jobs were queued or cancelled, so the job workers look at once.
    pub jobs_wake: Notify,
    /// Planka, when `planka.api_key` or a username and password are set.
    pub tasks: Option<Tasks>,
    /// The embedder and the vector store (room history search).
    pub rag: Rag,
    /// The coding agents (`[agents.<name>]`): their ghosts, inboxes, API limits.
    pub agents: Arc<crate::ghosts::Agents>,
    /// Chromium behind the address guard (`!browse`); started on first use.
    pub browser: Browser,
    /// When this process started (`!status`'s uptime).
    pub started: Instant,
    /// `!status`'s last probe results, reused for [`crate::probe::Cache::TTL`].
    pub status_cache: crate::probe::Cache,
    /// Joined-member counts, to tell direct chats without asking the homeserver per message.
    members: Mutex<HashMap<OwnedRoomId, (usize, Instant)>>,
    /// Questions per person per minute (`llm.user_requests_per_minute`); `None`: no limit.
    questions: Option<PerUser>,
    /// Commands per person per minute (`access.commands_per_minute`).
    commands: Option<PerUser>,
    /// When each person over the command rate was last told so (once a minute at most).
    flood_noticed: Mutex<HashMap<OwnedUserId, Instant>>,
    /// Until when the primary model server is skipped for the fallback.
    primary_down_until: Mutex<Option<Instant>>,
}

/// Whether a person may give a command now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRate {
    Allowed,
    /// Over the rate; `notice`: tell them (the first time this minute).
    Refused {
        notice: bool,
    },
}

/// How often a person over the command rate is told so.
const FLOOD_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// A per-person allowance per minute (a token bucket, so short bursts up to it pass).
struct PerUser(DefaultKeyedRateLimiter<OwnedUserId>);

impl PerUser {
    fn allow(&self, user: &UserId) -> bool {
        // Forget people who have been quiet long enough to be full again, so the map stays small.
        if self.0.len() > 10_000 {
            self.0.retain_recent();
        }
        self.0.check_key(&user.to_owned()).is_ok()
    }
}

fn per_minute(n: u32) -> Option<PerUser> {
    NonZeroU32::new(n).map(|n| PerUser(DefaultKeyedRateLimiter::keyed(Quota::per_minute(n))))
}

pub struct Fallback {
    pub client: LlmClient,
    pub model: String,
    pub cooldown: Duration,
}

impl Context {
    pub fn new(config: Config, store: Store, matrix: MatrixClient) -> anyhow::Result<Self> {
        let namespace = Arc::new(Namespace::from_config(&config)?);
        let access = Access::new(&config.access_users(), &config.access.admins).map_err(anyhow::Error::msg)?;
        let timeout = Duration::from_secs(config.llm.timeout_secs);
        let llm = LlmClient::new(&config.llm.base_url, &config.llm.api_key, timeout)?;
        let fallback = match &config.llm.fallback {
            Some(f) => Some(Fallback {
                client: LlmClient::new(&f.base_url, &f.api_key, timeout)?,
                model: f.chat_model.clone(),
                cooldown: Duration::from_secs(f.cooldown_secs),
            }),
            None => None,
        };
        let tasks = Tasks::from_config(&config.planka)?;
        let rag = Rag::from_config(&config)?;
        let agents = Arc::new(crate::ghosts::Agents::from_config(&config, &namespace).map_err(anyhow::Error::msg)?);
        let browser = Browser::from_config(&config.browser).map_err(anyhow::Error::msg)?;
        let (config_questions, config_commands) =
            (config.llm.user_requests_per_minute, config.access.commands_per_minute);
        Ok(Self {
            store,
            matrix,
            llm,
            namespace,
            access,
            config,
            fallback,
            jobs_wake: Notify::new(),
            tasks,
            rag,
            agents,
            browser,
            started: Instant::now(),
            status_cache: crate::probe::Cache::new(crate::probe::Cache::TTL),
            members: Mutex::default(),
            questions: per_minute(config_questions),
            commands: per_minute(config_commands),
            flood_noticed: Mutex::default(),
            primary_down_until: Mutex::default(),
        })
    }

    /// Counts a question against the user's per-minute allowance; `false` when it is used up.
    pub fn allow_question(&self, user: &UserId) -> bool {
        self.questions.as_ref().is_none_or(|limit| limit.allow(user))
    }

    /// Counts a command against the user's per-minute allowance: over it, they are told once a
    /// minute ([`CommandRate::Refused`] with `notice`), and the rest gets no answer (a flood).
    pub fn command_rate(&self, user: &UserId) -> CommandRate {
        if self.commands.as_ref().is_none_or(|limit| limit.allow(user)) {
            return CommandRate::Allowed;
        }
        let mut noticed = self.flood_noticed.lock().expect("not poisoned");
        noticed.retain(|_, at| at.elapsed() < FLOOD_NOTICE_EVERY);
        let notice = !noticed.contains_key(user);
        if notice {
            noticed.insert(user.to_owned(), Instant::now());
        }
        CommandRate::Refused { notice }
    }

    pub fn primary_cooling_down(&self) -> bool {
        self.primary_down_until.lock().expect("not poisoned").is_some_and(|until| Instant::now() < until)
    }

    /// The primary failed: use the fallback until its cooldown has passed.
    pub fn mark_primary_down(&self) {
        if let Some(f) = &self.fallback {
            *self.primary_down_until.lock().expect("not poisoned") = Some(Instant::now() + f.cooldown);
        }
    }

    /// A direct chat: the agent and exactly one other member.
    pub async fn is_direct_chat(&self, room: &RoomId) -> Result<bool, MatrixError> {
        let cached = self.members.lock().expect("not poisoned").get(room).copied();
        let count = match cached {
            Some((count, at)) if at.elapsed() < MEMBERS_TTL => count,
            _ => {
                let count = self.matrix.joined_members(self.namespace.sender(), room).await?.len();
                self.members.lock().expect("not poisoned").insert(room.to_owned(), (count, Instant::now()));
                count
            }
        };
        Ok(count == 2)
    }

    /// Whether `room`'s messages go into the vector store (`!index`, else `chroma.index_by_default`).
    pub async fn indexing_on(&self, room: &RoomId) -> Result<bool, crate::store::StoreError> {
        let settings = self.store.room_settings(room.as_str()).await?;
        Ok(settings.indexing.unwrap_or(self.config.chroma.index_by_default))
    }

    /// Someone joined or left: the count is stale.
    pub fn forget_members(&self, room: &RoomId) {
        self.members.lock().expect("not poisoned").remove(room);
        self.agents.forget_members(room);
    }
}
