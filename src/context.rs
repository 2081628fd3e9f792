//! What event handlers share: the store, the backend clients, and the policy derived from config.

use crate::access::Access;
use crate::commands::task::Tasks;
use crate::config::Config;
use crate::events::HandleError;
use crate::llm::LlmClient;
use crate::matrix::MatrixClient;
use crate::registration::Namespace;
use crate::store::Store;
use ruma::{OwnedRoomId, RoomId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a room's member count is trusted (membership events also clear it).
const MEMBERS_TTL: Duration = Duration::from_secs(60);

pub struct Context {
    pub store: Store,
    pub matrix: MatrixClient,
    pub llm: LlmClient,
    pub namespace: Arc<Namespace>,
    pub access: Access,
    pub config: Config,
    /// Planka, when `planka.api_key` or a username and password are set.
    pub tasks: Option<Tasks>,
    /// Joined-member counts, to tell direct chats without asking the homeserver per message.
    members: Mutex<HashMap<OwnedRoomId, (usize, Instant)>>,
}

impl Context {
    pub fn new(config: Config, store: Store, matrix: MatrixClient) -> anyhow::Result<Self> {
        let namespace = Arc::new(Namespace::from_config(&config)?);
        let access = Access::new(&config.access_users(), &config.access.admins).map_err(anyhow::Error::msg)?;
        let llm =
            LlmClient::new(&config.llm.base_url, &config.llm.api_key, Duration::from_secs(config.llm.timeout_secs))?;
        let tasks = Tasks::from_config(&config.planka)?;
        Ok(Self { store, matrix, llm, namespace, access, config, tasks, members: Mutex::default() })
    }

    /// A direct chat: the agent and exactly one other member.
    pub async fn is_direct_chat(&self, room: &RoomId) -> Result<bool, HandleError> {
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

    /// Someone joined or left: the count is stale.
    pub fn forget_members(&self, room: &RoomId) {
        self.members.lock().expect("not poisoned").remove(room);
    }
}
