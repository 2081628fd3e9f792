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
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use std::collections::{HashMap, VecDeque};
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
    /// Joined-member counts, to tell direct chats without asking the homeserver per message.
    members: Mutex<HashMap<OwnedRoomId, (usize, Instant)>>,
    /// When each user asked, over the last minute (`llm.user_requests_per_minute`).
    questions: Mutex<HashMap<OwnedUserId, VecDeque<Instant>>>,
    /// Until when the primary model server is skipped for the fallback.
    primary_down_until: Mutex<Option<Instant>>,
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
            members: Mutex::default(),
            questions: Mutex::default(),
            primary_down_until: Mutex::default(),
        })
    }

    /// Counts a question against the user's per-minute allowance; `false` when it is used up.
    pub fn allow_question(&self, user: &UserId) -> bool {
        let limit = self.config.llm.user_requests_per_minute as usize;
        if limit == 0 {
            return true;
        }
        let mut questions = self.questions.lock().expect("not poisoned");
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        // Forget users who have been quiet for a minute, so the map stays small.
        questions.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < minute));
        let times = questions.entry(user.to_owned()).or_default();
        times.retain(|t| now.duration_since(*t) < minute);
        if times.len() >= limit {
            return false;
        }
        times.push_back(now);
        true
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
