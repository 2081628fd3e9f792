//! Retrieval over room history: the vector store client (the indexer and retrieval build on it).
//!
//! Records are keyed by event id and always carry their room; every query names the rooms it may
//! search ([`Scope`]), so nothing in one room can surface in another (invariant 4).

pub mod chroma;

pub use chroma::{ChromaClient, ChromaError, Hit, Record, RecordMeta, Scope, StoredRecord};
