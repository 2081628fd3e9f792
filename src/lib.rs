//! # conclave-agent
//!
//! A Matrix application service that gives the Conclave workspace its `@agent`.
//!
//! ## Layout (dependencies point up this list)
//! - [`secret`], [`config`], [`access`], [`registration`]: typed, validated configuration; the
//!   user namespace and the Synapse registration derived from it.
//! - [`store`]: SQLite or PostgreSQL through one `sqlx::Any` path: seen txn ids, the durable
//!   inbox, room state.
//! - [`matrix`]: the homeserver client (ruma typed requests, identity assertion, retries).
//! - [`llm`]: the OpenAI-compatible chat client (Ollama), streaming, with real servers' quirks.
//! - [`planka`]: the Planka client (boards, cards, comments) and its webhook deliveries.
//! - [`rag`]: retrieval over room history: the ChromaDB client, every query scoped to rooms.
//! - [`commands`], [`strings`]: chat commands (pure parse, then execute) and all user-facing text.
//! - [`events`], [`dispatch`]: inbox → per-room ordered handling → replies.
//! - [`chat`]: when the agent answers, the context it sends the model, the streamed answer.
//! - [`appservice`]: the HTTP API the homeserver calls (axum).
//! - [`service`], [`ops`]: `serve`, and the one-shot CLI operations.
//!
//! ## The data path
//! homeserver → `PUT /transactions` → one db transaction (txn id + events) → 200 →
//! dispatcher → handler → reply with a txn id derived from the trigger.

pub mod access;
pub mod agents;
pub mod appservice;
pub mod chat;
pub mod commands;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod error_text;
pub mod events;
pub mod llm;
pub mod matrix;
pub mod ops;
pub mod planka;
pub mod rag;
pub mod registration;
pub mod secret;
pub mod service;
pub mod store;
pub mod strings;
