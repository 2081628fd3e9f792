//! Durable state: seen transactions, the event inbox, per-room state, the indexing queue, jobs.
//!
//! One code path over `sqlx::Any`: SQLite (WAL, the embedded default) or PostgreSQL (the
//! container). Queries use `$N` placeholders, which both accept; times are i64 milliseconds and
//! flags are i64 0/1, the types `Any` carries on both.

mod agents;
mod backfill;
mod inbox;
mod index;
mod ingest;
mod jobs;
mod prune;
mod rooms;
mod settings;
mod tasks;

pub use agents::{AgentInboxRow, AgentProgressRow, StoredToken, TokenStored};
pub use backfill::{Backfill, BackfillPage, HistoryMessage};
pub use inbox::{DeadLetter, InboxItem};
pub use index::{IndexJob, IndexOp, IndexWrite};
pub use ingest::{EventJson, NewEvent};
pub use jobs::{CancelTarget, Job, JobState, NewJob};
pub use prune::Cutoffs;
pub use rooms::RoomNotice;
pub use settings::{RoomSettings, UsageTotals, today};
pub use tasks::{Binding, PlankaIntent, TaskCard};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for DbKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        })
    }
}

impl DbKind {
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err("must start with sqlite:// or postgres://".into())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("storing failed: {0}")]
    Write(String),
    #[error("the store is closed")]
    Closed,
}

/// A change a room lane decides while handling one event. The dispatcher writes it in the database
/// transaction that removes the event from the inbox: it happens exactly when the event counts as
/// handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Index(IndexWrite),
    /// `edit` replaced the text of `original` (remembered for when the edit is redacted).
    Edit {
        edit: String,
        original: String,
        room_id: String,
    },
    Job(NewJob),
    Cancel {
        target: CancelTarget,
        by: String,
    },
}

impl From<IndexWrite> for Write {
    fn from(write: IndexWrite) -> Self {
        Self::Index(write)
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    kind: DbKind,
    /// Bounded: when the writer falls behind, the homeserver's requests wait (back-pressure).
    ingest_queue: tokio::sync::mpsc::Sender<ingest::IngestJob>,
    /// Room settings as last read or written: every message asks whether its room is indexed.
    /// Only this process writes them, through [`Store::set_room_settings`].
    settings: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, RoomSettings>>>,
}

/// Text from outside (the homeserver, a room member, a coding agent) as the store writes it:
/// PostgreSQL's `text` cannot hold U+0000, so a NUL becomes U+FFFD, on both stores alike (the
/// same behaviour whichever is configured). Binding it costs what binding a `&str` does: sqlx
/// copies every text argument anyway.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Text<'a>(pub &'a str);

impl sqlx::Type<sqlx::Any> for Text<'_> {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <str as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Any> for Text<'_> {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<sqlx::Any>>::encode(storable(self.0).into_owned(), buf)
    }
}

/// `text` as the store writes it (see [`Text`]).
pub(crate) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}").into() } else { text.into() }
}

/// Milliseconds since the Unix epoch, the time unit of every column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Deliveries waiting for the ingest writer; more make `ingest` wait (the bound on the bodies held
/// while the database is slow).
const INGEST_QUEUE: usize = 256;

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and runs migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let kind = DbKind::from_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let mut sqlite_path = None;
        let pool = match kind {
            DbKind::Sqlite => {
                let (url, path) = prepare_sqlite_url(url)?;
                sqlite_path = Some(path);
                // One connection: SQLite has one writer anyway, and queueing in the pool is fair
                // and async where SQLite's busy handler would sleep. (The ingest writer has its
                // own, see `ingest`.)
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writers. NORMAL survives a crash of
                            // the agent; the ingest writer's own connection runs FULL (power cuts).
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            DbKind::Postgres => options.max_connections(8).connect(url).await?,
        };
        let (ingest_queue, queue) = tokio::sync::mpsc::channel(INGEST_QUEUE);
        let store = Self { pool: pool.clone(), kind, ingest_queue, settings: Default::default() };
        store.migrate().await?;
        ingest::start(pool, sqlite_path, queue)?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.kind {
            DbKind::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            DbKind::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// A database transaction on the pool. On SQLite it takes the write lock at once (IMMEDIATE):
    /// a transaction that read first and wrote later would fail, not wait, when the ingest writer
    /// committed in between.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => self.pool.begin().await?,
        })
    }

    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// A trivial round trip, for `check` and `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates the directory of a SQLite file and asks SQLite to create the file; the URL and the
/// file's path.
fn prepare_sqlite_url(url: &str) -> Result<(String, String), StoreError> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let dir = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
    }
    let url = if query.contains("mode=") {
        url.to_owned()
    } else if query.is_empty() {
        format!("sqlite://{path}?mode=rwc")
    } else {
        format!("sqlite://{path}?{query}&mode=rwc")
    };
    Ok((url, path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_database_makes_deliveries_wait_in_a_bounded_queue_and_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/s.db", dir.path().display())).await.unwrap();
        // Another writer holds SQLite's write lock: the ingest writer cannot commit.
        let mut lock = store.pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *lock).await.unwrap();
        let total = INGEST_QUEUE + 64 + 50; // the queue, the largest group in the writer's hands, more
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..total {
            let store = store.clone();
            let event = NewEvent { room_id: "!r".into(), event_id: format!("$e{n}"), json: "{}".into() };
            calls.spawn(async move { store.ingest(&format!("t{n}"), vec![event]).await });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while store.ingest_queue.capacity() > 0 {
            assert!(std::time::Instant::now() < deadline, "the queue never filled");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(calls.try_join_next().is_none(), "nothing is acknowledged while the database is stalled");
        sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
        drop(lock);
        let mut stored = 0;
        while let Some(result) = calls.join_next().await {
            assert!(result.unwrap().unwrap(), "each delivery is new and stored");
            stored += 1;
        }
        assert_eq!(stored, total);
        assert_eq!(store.inbox_len().await.unwrap(), total as i64);
    }

    #[tokio::test]
    async fn acknowledged_deliveries_are_copied_from_the_wal_into_the_database_file_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.db");
        let store = Store::connect(&format!("sqlite://{}", file.display())).await.unwrap();
        let size = || std::fs::metadata(&file).unwrap().len();
        let before = size();
        // About 2 MiB: far below the writer's own checkpoint (3,000 pages), and nothing commits
        // on the pool's connection (whose checkpoints would copy it too).
        let body = "x".repeat(1024);
        for n in 0..40 {
            let events = (0..50)
                .map(|i| NewEvent {
                    room_id: "!r".into(),
                    event_id: format!("$e{n}-{i}"),
                    json: format!(r#"{{"body":"{body}"}}"#).as_str().into(),
                })
                .collect();
            assert!(store.ingest(&format!("t{n}"), events).await.unwrap());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < before + 2_000_000 {
            assert!(std::time::Instant::now() < deadline, "the database file is still {} bytes", size());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn db_kinds_from_urls() {
        assert_eq!(DbKind::from_url("sqlite://x.db"), Ok(DbKind::Sqlite));
        assert_eq!(DbKind::from_url("postgres://u@h/db"), Ok(DbKind::Postgres));
        assert_eq!(DbKind::from_url("postgresql://u@h/db"), Ok(DbKind::Postgres));
        assert!(DbKind::from_url("mysql://x").is_err());
    }

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.db");
        let (url, file) = prepare_sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert!(url.ends_with("a.db?mode=rwc"), "{url}");
        assert_eq!(file, path.display().to_string());
        assert!(path.parent().unwrap().is_dir());
        assert_eq!(prepare_sqlite_url("sqlite://x.db?mode=ro").unwrap().0, "sqlite://x.db?mode=ro");
    }
}
