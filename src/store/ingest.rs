//! The ingest writer: deliveries from the homeserver into `seen_deliveries` and the inbox, as many
//! as are waiting in one database transaction (group commit: one commit, and on SQLite one fsync,
//! for all of them), durable before each delivery is acknowledged (invariant 1).
//!
//! On SQLite the writer is a thread of its own with its own connection (rusqlite): the homeserver's
//! requests never queue behind the dispatcher's statements on the pool's connection, each row is a
//! cached prepared statement with no thread hand-off, and this connection alone runs
//! `synchronous=FULL`, so an acknowledged delivery survives a power cut (its fsync of the WAL also
//! covers the pool's earlier commits). A second thread checkpoints the WAL beside it. The pool's
//! transactions begin IMMEDIATE on SQLite ([`super::Store::begin`]) so the two writers only ever
//! wait for each other, never fail.
//! On PostgreSQL the writer is a task on the pool.

use super::{StoreError, Text, now_ms, storable};
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, AssertSqlSafe, Connection};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// An event as it enters the inbox.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub room_id: String,
    pub event_id: String,
    /// The event's JSON, exactly as the homeserver sent it.
    pub json: EventJson,
}

/// An event's JSON as sent: a slice of the transaction body where it came from one, so a big
/// transaction is held once until it is stored, not twice (issue 18 point 4).
#[derive(Debug, Clone)]
pub struct EventJson(bytes::Bytes);

impl EventJson {
    /// The part `json` of `body` (which `json` must borrow from), without a copy.
    pub fn slice_of(body: &bytes::Bytes, json: &str) -> Self {
        Self(body.slice_ref(json.as_bytes()))
    }

    /// The text; every constructor takes UTF-8, so this fails only on a broken invariant.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }
}

impl From<&str> for EventJson {
    fn from(json: &str) -> Self {
        Self(bytes::Bytes::copy_from_slice(json.as_bytes()))
    }
}

/// One `ingest` call waiting for the writer.
pub(super) struct IngestJob {
    txn_id: String,
    digest: String,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

impl IngestJob {
    pub fn new(txn_id: &str, events: Vec<NewEvent>, reply: oneshot::Sender<Result<bool, StoreError>>) -> Self {
        Self { txn_id: txn_id.to_owned(), digest: delivery_digest(&events), events, reply }
    }
}

/// What tells a retry from a reused txn id: SHA-256 over the events' ids, each length-prefixed (so
/// no two lists of ids share a digest by concatenation). An event id names one event (in room
/// versions 3 and later it is the event's hash), so a retry carries the same ids and a reused
/// txn id after a homeserver restart carries others; hashing the ids alone instead of the whole
/// JSON is a quarter of the bytes.
fn delivery_digest(events: &[NewEvent]) -> String {
    let mut hash = Sha256::new();
    for e in events {
        hash.update((e.event_id.len() as u64).to_le_bytes());
        hash.update(e.event_id.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Bounds of one group commit.
const GROUP_MAX_TXNS: usize = 64;
const GROUP_MAX_EVENTS: usize = 10_000;
/// How long the SQLite writer waits for the pool's connection to release the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const BUSY_NAP: Duration = Duration::from_micros(200);

/// The next group: the first job and as many as are waiting, within the bounds.
fn group_after(first: IngestJob, queue: &mut mpsc::Receiver<IngestJob>) -> Vec<IngestJob> {
    let mut events = first.events.len();
    let mut group = vec![first];
    while group.len() < GROUP_MAX_TXNS && events < GROUP_MAX_EVENTS {
        let Ok(job) = queue.try_recv() else { break };
        events += job.events.len();
        group.push(job);
    }
    group
}

/// Tells each job of the group what became of it.
fn answer(group: Vec<IngestJob>, result: Result<Vec<bool>, String>) {
    match result {
        Ok(new) => {
            for (job, new) in group.into_iter().zip(new) {
                let _ = job.reply.send(Ok(new));
            }
        }
        Err(reason) => {
            tracing::error!(error = %reason, txns = group.len(), "storing transactions failed");
            for job in group {
                let _ = job.reply.send(Err(StoreError::Write(reason.clone())));
            }
        }
    }
}

/// Starts the writer: on the SQLite file at `sqlite_path`, else (PostgreSQL) on `pool`. It ends
/// when every sender of `queue` is gone.
pub(super) fn start(
    pool: AnyPool,
    sqlite_path: Option<String>,
    queue: mpsc::Receiver<IngestJob>,
) -> Result<(), StoreError> {
    match sqlite_path {
        Some(path) => {
            let open = |path: &str| open_sqlite(path).map_err(|e| StoreError::Write(format!("opening {path}: {e}")));
            let (conn, checkpoints) = (open(&path)?, open(&path)?);
            let (committed, commits) = std::sync::mpsc::sync_channel(1);
            spawn_thread("wal-checkpointer", move || checkpointer(checkpoints, commits))?;
            spawn_thread("ingest-writer", move || sqlite_writer(conn, queue, committed))?;
        }
        None => {
            tokio::spawn(pool_writer(pool, queue));
        }
    }
    Ok(())
}

fn spawn_thread(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(|e| StoreError::Write(format!("cannot start the {name}: {e}")))
}

fn open_sqlite(path: &str) -> Result<rusqlite::Connection, String> {
    let setup = |conn: &rusqlite::Connection| -> rusqlite::Result<i64> {
        // SQLite's own busy handler sleeps 1, 2, 5, 10, 15 … ms: a lock the pool's connection holds
        // for 2 ms would cost a request 8. Short, even naps answer within a fraction of a millisecond.
        conn.busy_handler(Some(|tries: i32| {
            std::thread::sleep(BUSY_NAP);
            u128::from(tries.unsigned_abs()) * BUSY_NAP.as_micros() < BUSY_TIMEOUT.as_micros()
        }))?;
        // Checkpoints (copying the WAL into the database file) are the checkpointer's, beside the
        // writer; the writer's own at 3,000 pages then finds little left to copy, and after it
        // the WAL starts again from its beginning (it can only when a checkpoint ran with no
        // commit beside it). See `checkpointer`.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 3000;")?;
        conn.query_row("PRAGMA synchronous", [], |row| row.get(0))
    };
    let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    // What acknowledging rests on, read back rather than assumed (2 = FULL).
    match setup(&conn) {
        Ok(2) => Ok(conn),
        Ok(level) => Err(format!("synchronous is {level}, not FULL")),
        Err(e) => Err(e.to_string()),
    }
}

fn sqlite_writer(
    mut conn: rusqlite::Connection,
    mut queue: mpsc::Receiver<IngestJob>,
    committed: std::sync::mpsc::SyncSender<()>,
) {
    while let Some(first) = queue.blocking_recv() {
        let group = group_after(first, &mut queue);
        let result = sqlite_group(&mut conn, &group).map_err(|e| e.to_string());
        answer(group, result);
        // One call waiting is enough: the checkpointer copies all that was committed until then.
        let _ = committed.try_send(());
    }
}

/// Least time between two checkpoints: under a flood one per commit would fsync the database
/// file a thousand times a second for a few pages each.
const CHECKPOINT_GAP: Duration = Duration::from_millis(5);

/// Copies committed pages from the WAL into the database file (a PASSIVE checkpoint: it never
/// holds up the writer) after the writer's commits, at most every [`CHECKPOINT_GAP`], and not at
/// all while nothing is written. Done inline by the writer instead, a checkpoint of 3,000 pages
/// held up the requests waiting behind it: measured (benches/wrk.rs, 16 connections, one round
/// each) p99 19.8 → 5.7 ms at 338k → 321k events/s; inline at 1,000 pages, p99 10.4 ms at 297k.
/// Ends with the writer.
fn checkpointer(conn: rusqlite::Connection, commits: std::sync::mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpointing the WAL failed; the writer's own checkpoint still runs");
        }
        std::thread::sleep(CHECKPOINT_GAP);
    }
}

fn sqlite_group(conn: &mut rusqlite::Connection, group: &[IngestJob]) -> rusqlite::Result<Vec<bool>> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut new = Vec::with_capacity(group.len());
    {
        let mut seen = tx.prepare_cached(
            "INSERT INTO seen_deliveries (txn_id, digest, received_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (txn_id, digest) DO NOTHING",
        )?;
        // One row per statement: measured faster than many-row statements here (cached, no parse).
        let mut insert =
            tx.prepare_cached("INSERT INTO inbox (room_id, event_id, event, received_at) VALUES (?1, ?2, ?3, ?4)")?;
        for job in group {
            // A delivery seen before (even earlier in this group) changes nothing.
            let inserted = seen.execute((storable(&job.txn_id), &job.digest, now))? == 1;
            new.push(inserted);
            if !inserted {
                continue;
            }
            for e in &job.events {
                let json = e.json.text().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                insert.execute((storable(&e.room_id), storable(&e.event_id), json, now))?;
            }
        }
    }
    tx.commit()?;
    Ok(new)
}

/// Rows per INSERT: 4 parameters each stays far below PostgreSQL's limit.
const INSERT_CHUNK: usize = 200;

async fn pool_writer(pool: AnyPool, mut queue: mpsc::Receiver<IngestJob>) {
    while let Some(first) = queue.recv().await {
        let group = group_after(first, &mut queue);
        let result = pool_group(&pool, &group).await.map_err(|e| e.to_string());
        answer(group, result);
    }
}

async fn pool_group(pool: &AnyPool, group: &[IngestJob]) -> Result<Vec<bool>, StoreError> {
    let now = now_ms();
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut new = Vec::with_capacity(group.len());
    for job in group {
        let inserted = sqlx::query(
            "INSERT INTO seen_deliveries (txn_id, digest, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (txn_id, digest) DO NOTHING",
        )
        .bind(Text(&job.txn_id))
        .bind(&job.digest)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        new.push(inserted);
        if !inserted {
            continue;
        }
        for chunk in job.events.chunks(INSERT_CHUNK) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, ${})", i * 4 + 1, i * 4 + 2, i * 4 + 3, i * 4 + 4))
                .collect();
            let sql = format!("INSERT INTO inbox (room_id, event_id, event, received_at) VALUES {}", rows.join(","));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                let json = e.json.text().map_err(|e| StoreError::Write(e.to_string()))?;
                q = q.bind(Text(&e.room_id)).bind(Text(&e.event_id)).bind(json).bind(now);
            }
            q.execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    Ok(new)
}
