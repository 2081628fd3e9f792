//! What event handlers share: the store, the homeserver client and the policy derived from config.

use crate::access::Access;
use crate::config::Config;
use crate::matrix::MatrixClient;
use crate::registration::Namespace;
use crate::store::Store;
use std::sync::Arc;

pub struct Context {
    pub store: Store,
    pub matrix: MatrixClient,
    pub namespace: Arc<Namespace>,
    pub access: Access,
    pub config: Config,
}

impl Context {
    pub fn new(config: Config, store: Store, matrix: MatrixClient) -> anyhow::Result<Self> {
        let namespace = Arc::new(Namespace::from_config(&config)?);
        let access = Access::new(&config.access_users(), &config.access.admins).map_err(anyhow::Error::msg)?;
        Ok(Self { store, matrix, namespace, access, config })
    }
}
