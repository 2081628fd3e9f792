//! The agent's Planka side: the client, and what it needs to recognise its own changes when
//! Planka's webhook reports them back.

use super::{PlankaClient, PlankaError};
use crate::config;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A webhook delivery about a card the agent changed this recently is its own change's echo.
const ECHO_WINDOW: Duration = Duration::from_secs(60);

/// The Planka side of the agent: the client, and what it needs to recognise its own changes.
#[derive(Debug)]
pub struct Tasks {
    pub client: PlankaClient,
    /// The agent's own Planka user id, asked once.
    me: tokio::sync::OnceCell<String>,
    /// Cards the agent changed, and when; pruned as it grows.
    touched: Mutex<HashMap<String, Instant>>,
}

impl Tasks {
    /// `None` when Planka is not configured.
    pub fn from_config(config: &config::Planka) -> anyhow::Result<Option<Self>> {
        match PlankaClient::new(config, Duration::from_secs(config.timeout_secs)) {
            Ok(client) => Ok(Some(Self { client, me: Default::default(), touched: Mutex::default() })),
            Err(PlankaError::NotConfigured) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn touch(&self, card_id: &str) {
        let mut touched = self.touched.lock().expect("not poisoned");
        if touched.len() > 1000 {
            touched.retain(|_, at| at.elapsed() < ECHO_WINDOW);
        }
        touched.insert(card_id.to_owned(), Instant::now());
    }

    /// The agent's own Planka user id, asked once.
    pub async fn my_id(&self) -> Result<&str, PlankaError> {
        self.me.get_or_try_init(|| async { self.client.me().await.map(|u| u.id) }).await.map(String::as_str)
    }

    /// Whether a change Planka reports was made by the agent: its Planka user acted, or (when
    /// that cannot be told) the agent changed that card within the last minute.
    pub async fn is_own_change(&self, actor_id: Option<&str>, card_id: Option<&str>) -> bool {
        match (self.my_id().await, actor_id) {
            (Ok(me), Some(actor)) => me == actor,
            _ => card_id.is_some_and(|card| {
                self.touched.lock().expect("not poisoned").get(card).is_some_and(|at| at.elapsed() < ECHO_WINDOW)
            }),
        }
    }
}
