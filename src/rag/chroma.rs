//! ChromaDB client over its v2 HTTP API (the facts it relies on: docs/chroma.md): one collection of message
//! records, opened by name with cosine distance and then addressed by its uuid.
//!
//! Every call has the client's timeout (invariant 7) and is tried once: a transient error goes back
//! to the caller (the indexer's durable queue), which owns the retrying. Every query is scoped to
//! rooms by construction ([`Scope`] is a required argument), so retrieval cannot leak across rooms.

use crate::config;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// Header carrying the optional token. Self-hosted Chroma 1.x ignores it; a proxy or a hosted
/// Chroma in front may not.
const TOKEN_HEADER: &str = "x-chroma-token";

#[derive(Debug, thiserror::Error)]
pub enum ChromaError {
    #[error("Chroma at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Chroma did not answer within {0:?}")]
    Timeout(Duration),
    /// A 400: the request itself is wrong (e.g. an embedding of the wrong dimension); retrying
    /// the same request cannot help.
    #[error("Chroma rejected the request as invalid ({status} {error}): {message}")]
    InvalidArgument { status: u16, error: String, message: String },
    #[error("Chroma does not know it (404 {error}): {message}")]
    NotFound { error: String, message: String },
    #[error("Chroma refused the request ({status} {error}): {message}")]
    Api { status: u16, error: String, message: String },
    /// `get_or_create` opens an existing collection as it is, whatever distance it was made with.
    #[error(
        "the Chroma collection {collection} uses {space} distance, not cosine: delete it or configure another name"
    )]
    WrongDistance { collection: String, space: String },
    #[error("unexpected answer from Chroma: {0}")]
    Response(String),
    #[error("cannot set up the Chroma client: {0}")]
    Build(String),
}

impl ChromaError {
    /// What failed, in words for a chat room: no address, no text of Chroma's.
    pub fn public(&self) -> String {
        match self {
            Self::Unreachable { .. } => "the vector store (Chroma) cannot be reached".into(),
            Self::Timeout(t) => format!("the vector store (Chroma) did not answer within {} s", t.as_secs()),
            Self::WrongDistance { .. } => {
                "the vector store's collection is set up wrongly (see the agent's log)".into()
            }
            Self::InvalidArgument { status, .. } | Self::Api { status, .. } => {
                format!("the vector store (Chroma) refused the request (HTTP {status})")
            }
            Self::NotFound { .. } => "the vector store (Chroma) has no such collection".into(),
            Self::Response(_) | Self::Build(_) => {
                "the vector store (Chroma) gave an answer the agent does not understand".into()
            }
        }
    }

    /// Worth trying again later (Chroma is down, restarting or overloaded), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout(_) => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::InvalidArgument { .. }
            | Self::NotFound { .. }
            | Self::WrongDistance { .. }
            | Self::Response(_)
            | Self::Build(_) => false,
        }
    }

    /// The HTTP status Chroma answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::InvalidArgument { status, .. } | Self::Api { status, .. } => Some(*status),
            Self::NotFound { .. } => Some(404),
            _ => None,
        }
    }

    /// Chroma's own `message`, if it answered with one.
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::InvalidArgument { message, .. } | Self::NotFound { message, .. } | Self::Api { message, .. } => {
                Some(message)
            }
            _ => None,
        }
    }
}

/// What a record carries besides its text and vector. Only strings and integers: Chroma accepts no
/// nested values and no nulls inside a metadata map, so an absent `thread_id` is left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub room_id: String,
    pub sender: String,
    /// Origin server timestamp, in milliseconds.
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// One message to store; `id` is its event id, so storing it again replaces it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: String,
    pub embedding: Vec<f32>,
    pub document: String,
    pub meta: RecordMeta,
}

/// A stored record as `get` returns it (without its vector).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    pub id: String,
    pub document: String,
    pub meta: RecordMeta,
}

/// One query result; a smaller `distance` is closer (cosine distance, 0 = same direction).
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: String,
    pub document: String,
    pub meta: RecordMeta,
    pub distance: f32,
}

/// The rooms a query may search. There is no "everywhere": a wider search lists the rooms the
/// asking user is joined to (invariant 4). [`Scope::Seen`] also limits each room to the times
/// whose messages the asker may read (the room's history visibility).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Room(String),
    Rooms(Vec<String>),
    Seen(Vec<SeenRoom>),
}

/// One room of a [`Scope::Seen`]: all of its history (`windows: None`) or only messages sent
/// within `windows` (none: nothing of the room).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRoom {
    pub room: String,
    pub windows: Option<Vec<Window>>,
}

/// Messages sent from `from` (inclusive) until `until` (exclusive; `None`: to now), in Unix ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub until: Option<i64>,
}

impl Window {
    fn holds(&self, ts: i64) -> bool {
        ts >= self.from && self.until.is_none_or(|until| ts < until)
    }

    fn filter(&self) -> serde_json::Value {
        let from = json!({ "ts": { "$gte": self.from } });
        match self.until {
            None => from,
            Some(until) => json!({ "$and": [from, { "ts": { "$lt": until } }] }),
        }
    }
}

impl SeenRoom {
    /// Chroma's filter for this room; `None` when nothing of it may be seen.
    fn filter(&self) -> Option<serde_json::Value> {
        let room = json!({ "room_id": self.room });
        let Some(windows) = &self.windows else { return Some(room) };
        let times = any_of(windows.iter().map(Window::filter).collect())?;
        Some(json!({ "$and": [room, times] }))
    }

    /// A message of this room sent at `ts` may be seen.
    pub fn readable_at(&self, ts: i64) -> bool {
        self.windows.as_ref().is_none_or(|w| w.iter().any(|w| w.holds(ts)))
    }

    fn allows(&self, room: &str, ts: i64) -> bool {
        self.room == room && self.readable_at(ts)
    }
}

/// One clause for "any of these" (Chroma refuses `$or` with fewer than two); `None` for none.
fn any_of(mut clauses: Vec<serde_json::Value>) -> Option<serde_json::Value> {
    match clauses.len() {
        0 => None,
        1 => clauses.pop(),
        _ => Some(json!({ "$or": clauses })),
    }
}

impl Scope {
    /// No room at all: nothing may match.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Room(_) => false,
            Self::Rooms(rooms) => rooms.is_empty(),
            Self::Seen(rooms) => rooms.iter().all(|r| r.filter().is_none()),
        }
    }

    /// Chroma's `where` filter; `None` when the scope is empty and nothing may match.
    fn filter(&self) -> Option<serde_json::Value> {
        match self {
            _ if self.is_empty() => None,
            Self::Room(room) => Some(json!({ "room_id": room })),
            Self::Rooms(rooms) => Some(json!({ "room_id": { "$in": rooms } })),
            Self::Seen(rooms) => any_of(rooms.iter().filter_map(SeenRoom::filter).collect()),
        }
    }

    fn allows(&self, meta: &RecordMeta) -> bool {
        match self {
            Self::Room(r) => *r == meta.room_id,
            Self::Rooms(rs) => rs.contains(&meta.room_id),
            Self::Seen(rooms) => rooms.iter().any(|r| r.allows(&meta.room_id, meta.ts)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ChromaClient {
    http: reqwest::Client,
    /// `<url>/api/v2`; kept as a `Url` so tenant and database names are escaped as path segments.
    api: Url,
    tenant: String,
    database: String,
    collection: String,
    timeout: Duration,
    /// A cap below Chroma's own `max_batch_size` (tests use it to exercise the splitting).
    batch_limit: Option<usize>,
    /// Shared by clones, so one resolution serves every user of the client.
    cache: Arc<Mutex<Cache>>,
}

#[derive(Debug, Default)]
struct Cache {
    collection_id: Option<String>,
    max_batch_size: Option<usize>,
}

#[derive(Deserialize)]
struct CollectionInfo {
    id: String,
    #[serde(default)]
    configuration_json: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

impl CollectionInfo {
    /// The distance the collection was created with: Chroma 1.x reports it in its configuration,
    /// older servers only in the metadata.
    fn space(&self) -> Option<&str> {
        let configured = self.configuration_json.as_ref().and_then(|c| c.get("hnsw")?.get("space")?.as_str());
        configured.or_else(|| self.metadata.as_ref()?.get("hnsw:space")?.as_str())
    }
}

#[derive(Deserialize)]
struct PreFlight {
    max_batch_size: usize,
}

#[derive(Deserialize)]
struct Heartbeat {
    #[serde(rename = "nanosecond heartbeat")]
    nanos: u64,
}

#[derive(Serialize)]
struct UpsertBody<'a> {
    ids: Vec<&'a str>,
    embeddings: Vec<&'a [f32]>,
    documents: Vec<&'a str>,
    metadatas: Vec<&'a RecordMeta>,
}

#[derive(Serialize)]
struct QueryBody<'a> {
    query_embeddings: [&'a [f32]; 1],
    n_results: usize,
    #[serde(rename = "where")]
    filter: serde_json::Value,
    include: [&'static str; 3],
}

/// `query` answers one inner list per query vector; we always send one.
#[derive(Deserialize)]
struct QueryResponse {
    ids: Vec<Vec<String>>,
    #[serde(default)]
    documents: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    metadatas: Option<Vec<Vec<Option<RecordMeta>>>>,
    #[serde(default)]
    distances: Option<Vec<Vec<Option<f32>>>>,
}

#[derive(Deserialize)]
struct GetResponse {
    ids: Vec<String>,
    #[serde(default)]
    documents: Option<Vec<Option<String>>>,
    #[serde(default)]
    metadatas: Option<Vec<Option<RecordMeta>>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

impl ChromaClient {
    pub fn new(config: &config::Chroma, timeout: Duration) -> Result<Self, ChromaError> {
        let mut api = Url::parse(&config.url).map_err(|e| ChromaError::Build(format!("chroma.url: {e}")))?;
        // The client is built without TLS: Chroma listens on loopback (it has no authentication).
        if api.scheme() != "http" {
            return Err(ChromaError::Build("chroma.url: must be an http:// URL".into()));
        }
        api.path_segments_mut()
            .map_err(|()| ChromaError::Build("chroma.url: cannot take a path".into()))?
            .pop_if_empty()
            .extend(["api", "v2"]);
        let mut headers = HeaderMap::new();
        if !config.token.is_empty() {
            let mut value = HeaderValue::from_str(config.token.expose())
                .map_err(|_| ChromaError::Build("chroma.token: not a valid header value".into()))?;
            // Hidden from reqwest's Debug output of the client (invariant 5).
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .default_headers(headers)
            .user_agent(concat!("conclave-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChromaError::Build(e.to_string()))?;
        Ok(Self {
            http,
            api,
            tenant: config.tenant.clone(),
            database: config.database.clone(),
            collection: config.collection.clone(),
            timeout,
            batch_limit: None,
            cache: Arc::default(),
        })
    }

    /// Caps batches at `limit` records even when Chroma allows more.
    pub fn with_batch_limit(mut self, limit: usize) -> Self {
        self.batch_limit = Some(limit.max(1));
        self
    }

    pub fn collection_name(&self) -> &str {
        &self.collection
    }

    /// Liveness probe; returns Chroma's clock in nanoseconds.
    pub async fn heartbeat(&self) -> Result<u64, ChromaError> {
        let beat: Heartbeat = self.call(Method::GET, self.url(&["heartbeat"]), None::<&()>).await?;
        Ok(beat.nanos)
    }

    /// Opens the collection, creating it with cosine distance if missing, and returns its uuid.
    /// The uuid is cached; record operations resolve it again when Chroma no longer knows it.
    pub async fn ensure_collection(&self) -> Result<String, ChromaError> {
        if let Some(id) = self.cache.lock().unwrap().collection_id.clone() {
            return Ok(id);
        }
        let body = json!({ "name": self.collection, "metadata": { "hnsw:space": "cosine" }, "get_or_create": true });
        let info: CollectionInfo = self.call(Method::POST, self.db_url(&["collections"]), Some(&body)).await?;
        // Distances (and so any relevance cut-off) would silently mean something else.
        if let Some(space) = info.space().filter(|s| *s != "cosine") {
            return Err(ChromaError::WrongDistance { collection: self.collection.clone(), space: space.to_owned() });
        }
        tracing::debug!(collection = %self.collection, id = %info.id, "resolved the Chroma collection");
        self.cache.lock().unwrap().collection_id = Some(info.id.clone());
        Ok(info.id)
    }

    /// The most records sent in one request: Chroma's `max_batch_size` (asked once), or the
    /// client's own lower cap.
    pub async fn max_batch_size(&self) -> Result<usize, ChromaError> {
        if let Some(n) = self.cache.lock().unwrap().max_batch_size {
            return Ok(n);
        }
        let checks: PreFlight = self.call(Method::GET, self.url(&["pre-flight-checks"]), None::<&()>).await?;
        let n = checks.max_batch_size.max(1).min(self.batch_limit.unwrap_or(usize::MAX));
        self.cache.lock().unwrap().max_batch_size = Some(n);
        Ok(n)
    }

    /// Stores records, replacing any with the same id. Large inputs go in several requests; if one
    /// fails, the earlier ones stay stored, and repeating the whole call is harmless.
    pub async fn upsert(&self, records: &[Record]) -> Result<(), ChromaError> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = self.max_batch_size().await?;
        for chunk in records.chunks(batch) {
            let body = UpsertBody {
                ids: chunk.iter().map(|r| r.id.as_str()).collect(),
                embeddings: chunk.iter().map(|r| r.embedding.as_slice()).collect(),
                documents: chunk.iter().map(|r| r.document.as_str()).collect(),
                metadatas: chunk.iter().map(|r| &r.meta).collect(),
            };
            let _: serde_json::Value = self.record_op(Method::POST, "upsert", Some(&body)).await?;
        }
        Ok(())
    }

    /// The `n` records nearest to `embedding` within `scope`, nearest first.
    pub async fn query(&self, embedding: &[f32], n: usize, scope: &Scope) -> Result<Vec<Hit>, ChromaError> {
        let Some(filter) = scope.filter() else { return Ok(Vec::new()) };
        if n == 0 {
            return Ok(Vec::new());
        }
        let body = QueryBody {
            query_embeddings: [embedding],
            n_results: n,
            filter,
            include: ["documents", "metadatas", "distances"],
        };
        let response: QueryResponse = self.record_op(Method::POST, "query", Some(&body)).await?;
        let ids = response.ids.into_iter().next().unwrap_or_default();
        let len = ids.len();
        let documents = first_list(response.documents, len, "documents")?;
        let metadatas = first_list(response.metadatas, len, "metadatas")?;
        let distances = first_list(response.distances, len, "distances")?;
        let mut hits = Vec::with_capacity(len);
        for (((id, document), meta), distance) in ids.into_iter().zip(documents).zip(metadatas).zip(distances) {
            let meta = meta.ok_or_else(|| ChromaError::Response(format!("record {id} has no metadata")))?;
            let distance = distance.ok_or_else(|| ChromaError::Response(format!("record {id} has no distance")))?;
            // Belt and braces for invariant 4: the filter already did this.
            if !scope.allows(&meta) {
                tracing::warn!(record = %id, "Chroma returned a record outside the query's rooms; dropped");
                continue;
            }
            hits.push(Hit { id, document: document.unwrap_or_default(), meta, distance });
        }
        Ok(hits)
    }

    /// The stored records among `ids` (missing ids are simply absent), in no particular order.
    /// For bookkeeping by event id, not for retrieval: it is not scoped to rooms.
    pub async fn get<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<StoredRecord>, ChromaError> {
        // Nothing asked, nothing to send (and an empty filter is never let near Chroma).
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let body = json!({ "ids": ids, "include": ["documents", "metadatas"] });
        let response: GetResponse = self.record_op(Method::POST, "get", Some(&body)).await?;
        let len = response.ids.len();
        let documents = response.documents.unwrap_or_else(|| vec![None; len]);
        let metadatas = response.metadatas.ok_or_else(|| ChromaError::Response("get without metadatas".into()))?;
        if documents.len() != len || metadatas.len() != len {
            return Err(ChromaError::Response("get answered lists of different lengths".into()));
        }
        response
            .ids
            .into_iter()
            .zip(documents)
            .zip(metadatas)
            .map(|((id, document), meta)| {
                let meta = meta.ok_or_else(|| ChromaError::Response(format!("record {id} has no metadata")))?;
                Ok(StoredRecord { id, document: document.unwrap_or_default(), meta })
            })
            .collect()
    }

    /// Deletes the records with these ids (unknown ids are ignored).
    pub async fn delete_ids<S: AsRef<str>>(&self, ids: &[S]) -> Result<(), ChromaError> {
        // Chroma refuses a delete with neither ids nor where (400); deleting nothing is fine here.
        if ids.is_empty() {
            return Ok(());
        }
        let batch = self.max_batch_size().await?;
        for chunk in ids.chunks(batch) {
            let ids: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let _: serde_json::Value = self.record_op(Method::POST, "delete", Some(&json!({ "ids": ids }))).await?;
        }
        Ok(())
    }

    /// How many records `scope` holds. Chroma's `count` takes no filter, so the ids are paged
    /// through (ids only: no documents, no vectors).
    pub async fn count_in(&self, scope: &Scope) -> Result<u64, ChromaError> {
        let Some(filter) = scope.filter() else { return Ok(0) };
        let page = self.max_batch_size().await?;
        let mut total = 0;
        loop {
            let body = json!({ "where": filter, "include": [], "limit": page, "offset": total });
            let response: GetResponse = self.record_op(Method::POST, "get", Some(&body)).await?;
            total += response.ids.len();
            if response.ids.len() < page {
                return Ok(total as u64);
            }
        }
    }

    /// How many records the collection holds.
    pub async fn count(&self) -> Result<u64, ChromaError> {
        self.record_op(Method::GET, "count", None::<&()>).await
    }

    /// A call on the collection's records. A 404 means the cached uuid is stale (the collection
    /// was deleted and perhaps recreated): resolve the name again and retry once.
    async fn record_op<T, B>(&self, method: Method, op: &str, body: Option<&B>) -> Result<T, ChromaError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let id = self.ensure_collection().await?;
        match self.call(method.clone(), self.db_url(&["collections", &id, op]), body).await {
            Err(ChromaError::NotFound { .. }) => {
                tracing::info!(collection = %self.collection, "Chroma no longer knows the collection id; resolving it again");
                {
                    let mut cache = self.cache.lock().unwrap();
                    // Another caller may have resolved it meanwhile.
                    if cache.collection_id.as_deref() == Some(id.as_str()) {
                        cache.collection_id = None;
                    }
                }
                let id = self.ensure_collection().await?;
                self.call(method, self.db_url(&["collections", &id, op]), body).await
            }
            other => other,
        }
    }

    async fn call<T, B>(&self, method: Method, url: Url, body: Option<&B>) -> Result<T, ChromaError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let result = self.call_once(method, url, body).await;
        crate::telemetry::backend_call("chroma", result.is_ok());
        result
    }

    async fn call_once<T, B>(&self, method: Method, url: Url, body: Option<&B>) -> Result<T, ChromaError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut request = self.http.request(method, url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ChromaError::Response(format!("{}: {e}", url.path())))
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut().expect("checked in new").extend(segments);
        url
    }

    /// `…/tenants/{tenant}/databases/{database}/<segments>`.
    fn db_url(&self, segments: &[&str]) -> Url {
        let mut url = self.url(&["tenants", &self.tenant, "databases", &self.database]);
        url.path_segments_mut().expect("checked in new").extend(segments);
        url
    }

    fn transport_error(&self, e: reqwest::Error) -> ChromaError {
        if e.is_timeout() {
            ChromaError::Timeout(self.timeout)
        } else {
            let mut base = self.api.clone();
            base.set_path("");
            ChromaError::Unreachable {
                url: base.as_str().trim_end_matches('/').to_owned(),
                reason: crate::error_text::chain(&e),
            }
        }
    }
}

/// The first (only) inner list of a query answer, checked against the number of ids.
fn first_list<T: Clone>(
    lists: Option<Vec<Vec<Option<T>>>>,
    len: usize,
    what: &str,
) -> Result<Vec<Option<T>>, ChromaError> {
    let list = lists.and_then(|l| l.into_iter().next()).unwrap_or_else(|| vec![None; len]);
    if list.len() != len {
        return Err(ChromaError::Response(format!("query answered {} {what} for {len} ids", list.len())));
    }
    Ok(list)
}

/// A non-2xx answer as a typed error keeping Chroma's `error` and `message`.
fn api_error(status: u16, body: &[u8]) -> ChromaError {
    let (error, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.unwrap_or_default(), b.message.unwrap_or_default()),
        Err(_) => (String::new(), String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    match status {
        400 => ChromaError::InvalidArgument { status, error, message },
        404 => ChromaError::NotFound { error, message },
        _ => ChromaError::Api { status, error, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn config(url: &str, token: &str) -> config::Chroma {
        config::Chroma { url: url.into(), token: Secret::new(token), ..config::Chroma::default() }
    }

    #[test]
    fn api_errors_keep_chromas_words_and_classify_transience() {
        let cases: &[(&str, u16, &str, bool, Option<&str>)] = &[
            (
                "wrong dimension",
                400,
                r#"{"error":"InvalidArgumentError","message":"Collection expecting embedding with dimension of 384, got 3"}"#,
                false,
                Some("Collection expecting embedding with dimension of 384, got 3"),
            ),
            (
                "unknown collection",
                404,
                r#"{"error":"NotFoundError","message":"Collection x does not exist"}"#,
                false,
                Some("Collection x does not exist"),
            ),
            ("duplicate", 409, r#"{"error":"UniqueConstraintError","message":"exists"}"#, false, Some("exists")),
            ("internal", 500, r#"{"error":"ChromaError","message":"boom"}"#, true, Some("boom")),
            ("proxy page", 502, "<html>bad gateway</html>", true, Some("<html>bad gateway</html>")),
            ("rate limited", 429, "", true, Some("")),
        ];
        for (name, status, body, transient, message) in cases {
            let e = api_error(*status, body.as_bytes());
            assert_eq!(e.is_transient(), *transient, "{name}");
            assert_eq!(e.message(), *message, "{name}");
            assert_eq!(e.status(), Some(*status), "{name}");
            assert!(e.to_string().contains("Chroma"), "{name}: {e}");
        }
        assert!(matches!(api_error(400, b"{}"), ChromaError::InvalidArgument { .. }));
        assert!(matches!(api_error(404, b"{}"), ChromaError::NotFound { .. }));
    }

    #[test]
    fn scopes_become_where_filters_and_never_match_everything() {
        assert_eq!(Scope::Room("!a:s".into()).filter(), Some(json!({"room_id": "!a:s"})));
        assert_eq!(
            Scope::Rooms(vec!["!a:s".into(), "!b:s".into()]).filter(),
            Some(json!({"room_id": {"$in": ["!a:s", "!b:s"]}}))
        );
        assert_eq!(Scope::Rooms(vec![]).filter(), None);
        let meta = |room: &str, ts| RecordMeta { room_id: room.into(), sender: "@a:s".into(), ts, thread_id: None };
        assert!(Scope::Rooms(vec!["!a:s".into()]).allows(&meta("!a:s", 1)));
        assert!(!Scope::Room("!a:s".into()).allows(&meta("!b:s", 1)));
    }

    #[test]
    fn seen_scopes_limit_each_room_to_its_windows() {
        let meta = |room: &str, ts| RecordMeta { room_id: room.into(), sender: "@a:s".into(), ts, thread_id: None };
        let since = |from| Window { from, until: None };
        let scope = Scope::Seen(vec![
            SeenRoom { room: "!all:s".into(), windows: None },
            SeenRoom { room: "!late:s".into(), windows: Some(vec![since(100)]) },
            SeenRoom { room: "!none:s".into(), windows: Some(vec![]) },
            SeenRoom { room: "!two:s".into(), windows: Some(vec![Window { from: 10, until: Some(20) }, since(50)]) },
        ]);
        assert_eq!(
            scope.filter(),
            Some(json!({"$or": [
                {"room_id": "!all:s"},
                {"$and": [{"room_id": "!late:s"}, {"ts": {"$gte": 100}}]},
                {"$and": [{"room_id": "!two:s"}, {"$or": [
                    {"$and": [{"ts": {"$gte": 10}}, {"ts": {"$lt": 20}}]},
                    {"ts": {"$gte": 50}},
                ]}]},
            ]}))
        );
        let allowed = [("!all:s", 1), ("!late:s", 100), ("!two:s", 10), ("!two:s", 50)];
        let refused = [("!late:s", 99), ("!none:s", 1_000), ("!two:s", 20), ("!two:s", 49), ("!other:s", 1)];
        for (room, ts) in allowed {
            assert!(scope.allows(&meta(room, ts)), "{room} at {ts}");
        }
        for (room, ts) in refused {
            assert!(!scope.allows(&meta(room, ts)), "{room} at {ts}");
        }
        // A single room seen from a time is one clause; a scope that sees nothing is empty.
        let one = Scope::Seen(vec![SeenRoom { room: "!late:s".into(), windows: Some(vec![since(100)]) }]);
        assert_eq!(one.filter(), Some(json!({"$and": [{"room_id": "!late:s"}, {"ts": {"$gte": 100}}]})));
        let nothing = Scope::Seen(vec![SeenRoom { room: "!none:s".into(), windows: Some(vec![]) }]);
        assert!(nothing.is_empty() && nothing.filter().is_none());
    }

    #[test]
    fn metadata_leaves_out_an_absent_thread() {
        let mut meta =
            RecordMeta { room_id: "!r:s".into(), sender: "@a:s".into(), ts: 1_732_200_000_000, thread_id: None };
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            json!({"room_id": "!r:s", "sender": "@a:s", "ts": 1_732_200_000_000_i64})
        );
        meta.thread_id = Some("$root".into());
        assert_eq!(serde_json::to_value(&meta).unwrap()["thread_id"], "$root");
    }

    #[test]
    fn paths_escape_names_and_keep_a_base_path() {
        let mut c = config("http://127.0.0.1:8000/chroma/", "");
        c.tenant = "a b".into();
        let client = ChromaClient::new(&c, Duration::from_secs(1)).unwrap();
        assert_eq!(
            client.db_url(&["collections"]).as_str(),
            "http://127.0.0.1:8000/chroma/api/v2/tenants/a%20b/databases/default_database/collections"
        );
        for url in ["ftp://x", "https://chroma.example", "not a url"] {
            assert!(ChromaClient::new(&config(url, ""), Duration::from_secs(1)).is_err(), "{url}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client =
            ChromaClient::new(&config("http://127.0.0.1:8000", "hunter2-token"), Duration::from_secs(1)).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    /// The head of the one request `client.heartbeat()` sends, seen by a bare listener.
    async fn request_head(token: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let body = r#"{"nanosecond heartbeat":1}"#;
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let client = ChromaClient::new(&config(&url, token), Duration::from_secs(2)).unwrap();
        assert_eq!(client.heartbeat().await.unwrap(), 1);
        server.await.unwrap()
    }

    #[tokio::test]
    async fn the_token_header_is_sent_only_when_configured() {
        assert!(request_head("s3cret").await.contains("x-chroma-token: s3cret\r\n"));
        assert!(!request_head("").await.contains("x-chroma-token"));
    }

    #[tokio::test]
    async fn a_chroma_that_never_answers_times_out() {
        let url = crate::test_support::silent_server().await;
        let client = ChromaClient::new(&config(&url, ""), Duration::from_millis(300)).unwrap();
        let err = client.count().await.unwrap_err();
        assert!(matches!(err, ChromaError::Timeout(_)), "{err:?}");
        assert!(err.is_transient());
        assert!(err.to_string().starts_with("Chroma did not answer"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_chroma_is_a_clear_transient_error() {
        let url = format!("http://127.0.0.1:{}", crate::test_support::closed_port());
        let client = ChromaClient::new(&config(&url, ""), Duration::from_secs(2)).unwrap();
        let err = client.heartbeat().await.unwrap_err();
        assert!(matches!(err, ChromaError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
        assert!(err.to_string().contains(&format!("Chroma at {url}")), "{err}");
    }
}
