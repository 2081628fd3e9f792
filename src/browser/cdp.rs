//! A small Chrome DevTools Protocol client over chromiumoxide's websocket connection, with
//! chromiumoxide's generated protocol types.
//!
//! chromiumoxide's own `Handler` discovers every target of the browser and attaches to each page
//! (enabling domains, auto-attach, certificate-error overrides). On a shared Chromium (N.eko's)
//! those are the person's tabs, so this client attaches only to the targets it creates. Its driver
//! task polls the connection for the connection's whole life and does not stop on an error
//! message, only when the socket closes (DESIGN's known trap).

use chromiumoxide::cdp::browser_protocol::target::SessionId;
use chromiumoxide::types::{CallId, Command, EventMessage, Message, Method, MethodId};
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest wait for the answer to one command.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the websocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events buffered per session before the oldest are dropped (a page cannot grow memory).
const EVENT_BUFFER: usize = 1024;
/// Errors in a row after which the socket counts as broken.
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CdpError {
    #[error("the connection to the browser is closed")]
    Closed,
    #[error("the browser refused {method}: {message}")]
    Protocol { method: String, message: String },
    #[error("the browser did not answer {method} within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("cannot connect to the browser's DevTools endpoint: {0}")]
    Connect(String),
    #[error("unexpected answer to {method}: {detail}")]
    Decode { method: String, detail: String },
}

/// One event, its parameters still JSON (decoded by whoever waits for it).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub method: String,
    #[serde(rename = "sessionId")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub params: serde_json::Value,
}

impl Method for Event {
    fn identifier(&self) -> MethodId {
        self.method.clone().into()
    }
}

impl EventMessage for Event {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

impl Event {
    /// The parameters as a typed chromiumoxide event, when the method matches.
    pub fn decode<T: serde::de::DeserializeOwned + chromiumoxide::types::MethodType>(&self) -> Option<T> {
        (self.method == T::method_id()).then(|| serde_json::from_value(self.params.clone()).ok()).flatten()
    }
}

enum Request {
    Call {
        method: MethodId,
        session: Option<String>,
        params: serde_json::Value,
        reply: oneshot::Sender<Result<serde_json::Value, CdpError>>,
    },
    Subscribe {
        session: String,
        events: mpsc::Sender<Event>,
    },
    Unsubscribe {
        session: String,
    },
}

/// A handle to one DevTools connection; cheap to clone. The connection closes when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Cdp {
    requests: mpsc::Sender<Request>,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdp").field("alive", &self.is_alive()).finish()
    }
}

impl Cdp {
    /// Connects to a browser's websocket debugger URL (`ws://127.0.0.1:P/devtools/browser/…`).
    pub async fn connect(ws_url: &str) -> Result<Self, CdpError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, chromiumoxide::Connection::<Event>::connect(ws_url))
            .await
            .map_err(|_| CdpError::Connect(format!("no handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| CdpError::Connect(e.to_string()))?;
        let (requests, rx) = mpsc::channel(64);
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(drive(conn, rx, alive.clone()));
        Ok(Self { requests, alive })
    }

    /// Whether the socket is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Sends a typed command to the browser (`session` = `None`) or to an attached target.
    pub async fn call<C: Command>(&self, session: Option<&str>, command: C) -> Result<C::Response, CdpError> {
        let method = command.identifier();
        let params = serde_json::to_value(&command)
            .map_err(|e| CdpError::Decode { method: method.to_string(), detail: e.to_string() })?;
        let value = self.call_raw(method.clone(), session, params).await?;
        C::response_from_value(value)
            .map_err(|e| CdpError::Decode { method: method.to_string(), detail: e.to_string() })
    }

    /// Sends a command by name with JSON parameters (for parameters the generated types lack).
    pub async fn call_raw(
        &self,
        method: MethodId,
        session: Option<&str>,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, CdpError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Call { method: method.clone(), session: session.map(str::to_owned), params, reply };
        self.requests.send(request).await.map_err(|_| CdpError::Closed)?;
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => Err(CdpError::Timeout { method: method.to_string(), timeout: CALL_TIMEOUT }),
        }
    }

    /// The events of one attached session, until [`Cdp::unsubscribe`] or the socket closes.
    pub async fn subscribe(&self, session: &str) -> Result<mpsc::Receiver<Event>, CdpError> {
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        let request = Request::Subscribe { session: session.to_owned(), events };
        self.requests.send(request).await.map_err(|_| CdpError::Closed)?;
        Ok(rx)
    }

    pub fn unsubscribe(&self, session: &str) {
        let _ = self.requests.try_send(Request::Unsubscribe { session: session.to_owned() });
    }
}

type Pending = HashMap<CallId, (MethodId, oneshot::Sender<Result<serde_json::Value, CdpError>>)>;

enum Step {
    Request(Option<Request>),
    Message(Option<chromiumoxide::Result<Message<Event>>>),
}

/// Owns the connection: submits commands, routes answers by call id and events by session.
async fn drive(
    mut conn: chromiumoxide::Connection<Event>,
    mut requests: mpsc::Receiver<Request>,
    alive: Arc<AtomicBool>,
) {
    let mut pending: Pending = HashMap::new();
    let mut sessions: HashMap<String, mpsc::Sender<Event>> = HashMap::new();
    let mut handles_open = true;
    let mut errors = 0u32;
    loop {
        // Decide first, then act: the connection is borrowed by only one future at a time.
        let step = if handles_open {
            tokio::select! {
                r = requests.recv() => Step::Request(r),
                m = conn.next() => Step::Message(m),
            }
        } else {
            Step::Message(conn.next().await)
        };
        match step {
            Step::Request(None) => {
                // Every handle is gone: nobody can wait for anything; close the socket.
                handles_open = false;
                if pending.is_empty() {
                    break;
                }
            }
            Step::Request(Some(Request::Call { method, session, params, reply })) => {
                match conn.submit_command(method.clone(), session.map(SessionId::from), params) {
                    Ok(id) => {
                        pending.insert(id, (method, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(CdpError::Decode { method: method.to_string(), detail: e.to_string() }));
                    }
                }
            }
            Step::Request(Some(Request::Subscribe { session, events })) => {
                sessions.insert(session, events);
            }
            Step::Request(Some(Request::Unsubscribe { session })) => {
                sessions.remove(&session);
            }
            Step::Message(None) => break,
            Step::Message(Some(Ok(Message::Response(response)))) => {
                errors = 0;
                if let Some((method, reply)) = pending.remove(&response.id) {
                    let result = match (response.result, response.error) {
                        (_, Some(error)) => {
                            Err(CdpError::Protocol { method: method.to_string(), message: error.message })
                        }
                        (Some(result), None) => Ok(result),
                        (None, None) => Ok(serde_json::Value::Object(Default::default())),
                    };
                    let _ = reply.send(result);
                }
                if !handles_open && pending.is_empty() {
                    break;
                }
            }
            Step::Message(Some(Ok(Message::Event(event)))) => {
                errors = 0;
                let Some(session) = event.session_id.clone() else { continue };
                if let Some(events) = sessions.get(&session)
                    && let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event)
                {
                    sessions.remove(&session);
                }
            }
            Step::Message(Some(Err(e))) => {
                // A message we cannot read is not the end of the connection; a socket that
                // only yields errors is.
                errors += 1;
                tracing::debug!(error = %e, "browser: unreadable DevTools message");
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    break;
                }
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
    for (_, (_, reply)) in pending.drain() {
        let _ = reply.send(Err(CdpError::Closed));
    }
    tracing::debug!("browser: DevTools connection closed");
}
