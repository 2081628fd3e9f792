//! Homeserver client: ruma's typed client-server requests (messages, rooms, media uploads) over one reqwest client, authenticated
//! with the as_token and, for ghost users, identity assertion (`?user_id=`).
//!
//! Every call has a timeout; 429 (honouring `retry_after_ms`), 5xx and transport errors are
//! retried with bounded exponential back-off (invariant 7).

mod content;
pub mod markdown;
mod media;
mod rooms;
mod txn;

pub use content::{edit_content, notice, notice_reply, permalink, text_reply};
pub use media::{ImageMeta, file_content, image_content};
pub use rooms::{NewRoom, StateHistory, encryption_content};
pub use txn::txn_id_for;

use crate::secret::Secret;
use cs::state::get_state_event_for_key::v3::StateEventFormat;
use ruma::api::path_builder::{PathBuilder, SinglePath, VersionHistory};
use ruma::api::{AppserviceUserIdentity, client as cs};
use ruma::api::{
    IncomingResponse, MatrixVersion, OutgoingRequest, OutgoingRequestAppserviceExt, SupportedVersions,
    auth_scheme::{AuthScheme, SendAccessToken},
};
use ruma::events::AnyTimelineEvent;
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::{Relation, RoomMessageEventContent};
use ruma::serde::Raw;
use ruma::{EventId, OwnedEventId, OwnedUserId, RoomId, TransactionId, UInt, UserId};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Attempts per request, the first included.
const MAX_ATTEMPTS: u32 = 5;
/// First back-off; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `retry_after_ms` we honour; longer waits fail the call instead of stalling a room.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("the homeserver at {url} cannot be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the homeserver did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the homeserver refused the request ({status} {errcode}): {message}")]
    Api { status: u16, errcode: String, message: String },
    #[error("internal error building a homeserver request: {0}")]
    Build(String),
    #[error("unexpected homeserver response: {0}")]
    Response(String),
}

impl MatrixError {
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Api { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// What failed, in words for a chat room: no address, no server text.
    pub fn public(&self) -> String {
        match self {
            Self::Unreachable { .. } => "the homeserver cannot be reached".into(),
            Self::Timeout(t) => format!("the homeserver did not answer within {} s", t.as_secs()),
            Self::Api { status, errcode, .. } => format!("the homeserver refused ({status} {errcode})"),
            Self::Build(_) | Self::Response(_) => "an internal error talking to the homeserver".into(),
        }
    }

    /// Synapse's refusal of a relation to an event it does not have.
    pub fn is_unknown_relation(&self) -> bool {
        matches!(self, Self::Api { status: 400, message, .. } if message.contains("unknown event"))
    }

    /// Worth trying again later (the homeserver is down or overloaded), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout(_) => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Build(_) | Self::Response(_) => false,
        }
    }
}

/// Picks the path for an endpoint: versioned endpoints need the server's versions, single-path
/// ones nothing.
pub trait PathInput: PathBuilder {
    fn input(versions: &SupportedVersions) -> Self::Input<'_>;
}

impl PathInput for VersionHistory {
    fn input(versions: &SupportedVersions) -> Cow<'_, SupportedVersions> {
        Cow::Borrowed(versions)
    }
}

impl PathInput for SinglePath {
    fn input(_: &SupportedVersions) {}
}

#[derive(Clone, Debug)]
pub struct MatrixClient {
    http: reqwest::Client,
    base_url: String,
    as_token: Secret,
    timeout: Duration,
    versions: SupportedVersions,
    /// Whether the last call failed for the homeserver's sake; the first success after that
    /// wakes [`MatrixClient::recovered`], whoever made the call.
    failing: Arc<AtomicBool>,
    recovery: Arc<Notify>,
}

impl MatrixClient {
    pub fn new(base_url: &str, as_token: Secret, timeout: Duration) -> Result<Self, MatrixError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .user_agent(concat!("conclave-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MatrixError::Build(e.to_string()))?;
        // Synapse supports every stable version; ruma then picks each endpoint's newest path.
        let versions = SupportedVersions {
            versions: [MatrixVersion::V1_1, MatrixVersion::V1_11].into_iter().collect(),
            features: Default::default(),
        };
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token,
            timeout,
            versions,
            failing: Arc::default(),
            recovery: Arc::default(),
        })
    }

    /// Resolves when a call succeeds after calls failed because the homeserver was unreachable,
    /// timed out or answered 5xx/429 (it was down, or the network between us was).
    pub async fn recovered(&self) {
        self.recovery.notified().await;
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one typed request, as `as_user` when given (a ghost) or as the sender user.
    pub async fn send<R>(&self, request: R, as_user: Option<&UserId>) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.send_with(request, SendAccessToken::Appservice(self.as_token.expose()), as_user, MAX_ATTEMPTS).await
    }

    async fn send_with<R>(
        &self,
        request: R,
        token: SendAccessToken<'_>,
        as_user: Option<&UserId>,
        max_attempts: u32,
    ) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest,
        R::PathBuilder: PathInput,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let identity = as_user.map(AppserviceUserIdentity::new).unwrap_or_default();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let http_request = request
                .clone()
                .try_into_http_request_with_identity::<Vec<u8>>(
                    &self.base_url,
                    token,
                    identity,
                    R::PathBuilder::input(&self.versions),
                )
                .map_err(|e| MatrixError::Build(e.to_string()))?;
            let endpoint = http_request.uri().path().to_owned();
            let (err, retry_after) = match self.execute(http_request).await {
                Ok(response) if response.status().is_success() => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        self.recovery.notify_one();
                    }
                    let parsed = R::IncomingResponse::try_from_http_response(response)
                        .map_err(|e| MatrixError::Response(format!("{endpoint}: {e}")));
                    crate::telemetry::homeserver_call::<R>(parsed.is_ok());
                    return parsed;
                }
                Ok(response) => {
                    let retry_after = retry_after(&response);
                    (api_error(response), retry_after)
                }
                Err(e) => (e, None),
            };
            if !err.is_transient() || attempt >= max_attempts {
                if err.is_transient() {
                    self.failing.store(true, Ordering::Relaxed);
                }
                crate::telemetry::homeserver_call::<R>(false);
                return Err(err);
            }
            let wait = retry_after.map(|d| d.min(MAX_RETRY_AFTER)).unwrap_or(backoff);
            tracing::debug!(%endpoint, attempt, ?wait, error = %err, "retrying homeserver request");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn execute(&self, request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, MatrixError> {
        let request = reqwest::Request::try_from(request).map_err(|e| MatrixError::Build(e.to_string()))?;
        let response = self.http.execute(request).await.map_err(|e| self.transport_error(e))?;
        let mut builder = http::Response::builder().status(response.status());
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers().clone();
        }
        let body = response.bytes().await.map_err(|e| self.transport_error(e))?;
        builder.body(body.to_vec()).map_err(|e| MatrixError::Response(e.to_string()))
    }

    fn transport_error(&self, e: reqwest::Error) -> MatrixError {
        if e.is_timeout() {
            MatrixError::Timeout(self.timeout)
        } else {
            // Without the URL: it is our own base_url, reported separately.
            MatrixError::Unreachable { url: self.base_url.clone(), reason: crate::error_text::chain(&e) }
        }
    }

    // ---- Intent-style helpers: one per action the agent takes. ----

    /// The homeserver's supported versions: a liveness probe that needs no token (so a wrong
    /// as_token does not make a reachable homeserver look down).
    pub async fn versions(&self) -> Result<Vec<String>, MatrixError> {
        let request = cs::discovery::get_supported_versions::Request::new();
        Ok(self.send_with(request, SendAccessToken::None, None, MAX_ATTEMPTS).await?.versions)
    }

    /// One `versions` request, no retry: a readiness probe answers now, not after a back-off.
    pub async fn probe(&self) -> Result<Vec<String>, MatrixError> {
        let request = cs::discovery::get_supported_versions::Request::new();
        Ok(self.send_with(request, SendAccessToken::None, None, 1).await?.versions)
    }

    /// Who the as_token acts as, one request, no retry: the homeserver knows the token only
    /// when it has loaded the registration.
    pub async fn whoami(&self) -> Result<String, MatrixError> {
        let request = cs::account::whoami::v3::Request::new();
        let token = SendAccessToken::Appservice(self.as_token.expose());
        Ok(self.send_with(request, token, None, 1).await?.user_id.to_string())
    }

    /// Asks the homeserver to ping this appservice; returns the round trip it measured.
    pub async fn ping_appservice(&self, appservice_id: &str) -> Result<Duration, MatrixError> {
        let mut request = cs::appservice::request_ping::v1::Request::new(appservice_id.to_owned());
        request.transaction_id = Some(format!("ping.{}", crate::store::now_ms()).into());
        Ok(self.send(request, None).await?.duration)
    }

    /// Registers a user of our namespace; one that exists already is fine.
    pub async fn ensure_registered(&self, localpart: &str) -> Result<(), MatrixError> {
        let mut request = cs::account::register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(cs::account::register::LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send(request, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_display_name(&self, user: &UserId, name: &str) -> Result<(), MatrixError> {
        // The per-field endpoint every homeserver has; ruma prefers the newer generic one.
        #[allow(deprecated)]
        let request = cs::profile::set_display_name::v3::Request::new(user.to_owned(), Some(name.to_owned()));
        self.send(request, Some(user)).await.map(drop)
    }

    pub async fn join(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.send(cs::membership::join_room_by_id::v3::Request::new(room.to_owned()), Some(user)).await.map(drop)
    }

    /// Leaves a room, or rejects an invite to it.
    pub async fn leave(&self, user: &UserId, room: &RoomId) -> Result<(), MatrixError> {
        self.send(cs::membership::leave_room::v3::Request::new(room.to_owned()), Some(user)).await.map(drop)
    }

    /// Sends a message. `txn_id` makes a repeated send (after a crash) a no-op on the homeserver.
    /// A message in a thread whose root the homeserver does not know (an event that reached us but
    /// not it) goes out as a plain reply instead, rather than not at all.
    pub async fn send_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<OwnedEventId, MatrixError> {
        match self.send_once(user, room, txn_id, content).await {
            Err(e) if e.is_unknown_relation() && matches!(content.relates_to, Some(Relation::Thread(_))) => {
                tracing::warn!(error = %e, "the thread's root is unknown to the homeserver; replying outside it");
                let mut unthreaded = content.clone();
                unthreaded.relates_to = match &content.relates_to {
                    Some(Relation::Thread(thread)) => thread
                        .in_reply_to
                        .clone()
                        .map(|in_reply_to| Relation::Reply(ruma::events::relation::Reply::new(in_reply_to))),
                    _ => None,
                };
                let txn = ruma::OwnedTransactionId::from(format!("{txn_id}.unthreaded"));
                self.send_once(user, room, &txn, &unthreaded).await
            }
            result => result,
        }
    }

    async fn send_once(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        content: &RoomMessageEventContent,
    ) -> Result<OwnedEventId, MatrixError> {
        let request = cs::message::send_message_event::v3::Request::new(room.to_owned(), txn_id.to_owned(), content)
            .map_err(|e| MatrixError::Build(e.to_string()))?;
        Ok(self.send(request, Some(user)).await?.event_id)
    }

    /// Replaces the text of one of our messages (`m.replace`).
    pub async fn edit_message(
        &self,
        user: &UserId,
        room: &RoomId,
        txn_id: &TransactionId,
        target: &EventId,
        new_markdown: &markdown::Md,
        mentions: Option<&ruma::events::Mentions>,
    ) -> Result<OwnedEventId, MatrixError> {
        self.send_message(user, room, txn_id, &edit_content(target, new_markdown, mentions.cloned())).await
    }

    /// Shows (or stops showing) the typing notice for `timeout`.
    pub async fn typing(&self, user: &UserId, room: &RoomId, typing: Option<Duration>) -> Result<(), MatrixError> {
        use cs::typing::create_typing_event::v3::{Request, Typing, TypingInfo};
        let state = typing.map_or(Typing::No, |t| Typing::Yes(TypingInfo::new(t)));
        self.send(Request::new(user.to_owned(), room.to_owned(), state), Some(user)).await.map(drop)
    }

    /// One page of room history, newest first; returns the events and the token for the next page.
    pub async fn messages(
        &self,
        user: &UserId,
        room: &RoomId,
        from: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Raw<AnyTimelineEvent>>, Option<String>), MatrixError> {
        let mut request = cs::message::get_message_events::v3::Request::backward(room.to_owned());
        request.from = from.map(str::to_owned);
        request.limit = UInt::from(limit);
        let response = self.send(request, Some(user)).await?;
        Ok((response.chunk, response.end))
    }

    /// A string field of a room state event (`m.room.name` → `name`); `None` when it is not set.
    pub async fn state_field(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        field: &str,
    ) -> Result<Option<String>, MatrixError> {
        let content: Option<serde_json::Value> = self.state_content(user, room, event_type, "").await?;
        Ok(content.as_ref().and_then(|c| c.get(field)?.as_str()).map(str::to_owned))
    }

    /// The current membership of `member` in `room`, as `user` (who must be in the room) sees it;
    /// `None` when `member` never had one there.
    pub async fn membership(
        &self,
        user: &UserId,
        room: &RoomId,
        member: &UserId,
    ) -> Result<Option<MembershipState>, MatrixError> {
        // Only the field we need: a member event with odd other fields still tells its membership.
        #[derive(serde::Deserialize)]
        struct Content {
            membership: MembershipState,
        }
        let content: Option<Content> = self.state_content(user, room, "m.room.member", member.as_str()).await?;
        Ok(content.map(|c| c.membership))
    }

    /// The content of the room state event `(event_type, state_key)`; `None` when it is not set.
    async fn state_content<T: serde::de::DeserializeOwned>(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<T>, MatrixError> {
        let Some(json) = self.state_raw(user, room, event_type, state_key, StateEventFormat::Content).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| MatrixError::Response(format!("{event_type} state: {e}")))
    }

    /// A state event's content, or (with `StateEventFormat::Event`) the whole event; `None` when
    /// it is not set.
    async fn state_raw(
        &self,
        user: &UserId,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        format: StateEventFormat,
    ) -> Result<Option<String>, MatrixError> {
        let mut request = cs::state::get_state_event_for_key::v3::Request::new(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
        );
        request.format = format;
        match self.send(request, Some(user)).await {
            Ok(response) => Ok(Some(response.event_or_content.get().to_owned())),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One event of a room, by id (as seen by `user`, who must be able to see it).
    pub async fn event(
        &self,
        user: &UserId,
        room: &RoomId,
        event_id: &EventId,
    ) -> Result<Raw<AnyTimelineEvent>, MatrixError> {
        let request = cs::room::get_room_event::v3::Request::new(room.to_owned(), event_id.to_owned());
        Ok(self.send(request, Some(user)).await?.event)
    }

    /// The users joined to a room (as seen by `user`, who must be in it).
    pub async fn joined_members(&self, user: &UserId, room: &RoomId) -> Result<Vec<OwnedUserId>, MatrixError> {
        let response = self.send(cs::membership::joined_members::v3::Request::new(room.to_owned()), Some(user)).await?;
        Ok(response.joined.into_keys().collect())
    }
}

/// `Retry-After` from a 429: the body's `retry_after_ms`, else the header (seconds).
fn retry_after(response: &http::Response<Vec<u8>>) -> Option<Duration> {
    if response.status() != http::StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let from_body = serde_json::from_slice::<serde_json::Value>(response.body())
        .ok()
        .and_then(|v| v.get("retry_after_ms")?.as_u64())
        .map(Duration::from_millis);
    from_body.or_else(|| {
        let secs = response.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?.parse().ok()?;
        Some(Duration::from_secs(secs))
    })
}

/// A non-2xx answer as a typed error with the Matrix `errcode`.
fn api_error(response: http::Response<Vec<u8>>) -> MatrixError {
    #[derive(serde::Deserialize)]
    struct Body {
        errcode: Option<String>,
        error: Option<String>,
    }
    let status = response.status().as_u16();
    let body: Option<Body> = serde_json::from_slice(response.body()).ok();
    let (errcode, message) = match body {
        Some(b) => (b.errcode.unwrap_or_else(|| "M_UNKNOWN".into()), b.error.unwrap_or_default()),
        None => ("M_UNKNOWN".into(), String::from_utf8_lossy(response.body()).chars().take(200).collect()),
    };
    MatrixError::Api { status, errcode, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> http::Response<Vec<u8>> {
        http::Response::builder().status(status).body(body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn rate_limit_waits_come_from_the_body_or_header() {
        let r = response(429, r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#);
        assert_eq!(retry_after(&r), Some(Duration::from_millis(1500)));
        let r = http::Response::builder().status(429).header("retry-after", "2").body(Vec::new()).unwrap();
        assert_eq!(retry_after(&r), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&response(500, "{}")), None);
    }

    #[test]
    fn api_errors_keep_the_errcode_and_classify_transience() {
        let e = api_error(response(400, r#"{"errcode":"M_USER_IN_USE","error":"taken"}"#));
        assert_eq!(e.errcode(), Some("M_USER_IN_USE"));
        assert!(!e.is_transient());
        assert!(api_error(response(502, "bad gateway")).is_transient());
        assert!(api_error(response(429, "{}")).is_transient());
        let e = api_error(response(500, "<html>oops</html>"));
        assert_eq!(e.errcode(), Some("M_UNKNOWN"));
    }

    #[tokio::test]
    async fn a_homeserver_that_never_answers_is_a_timeout_after_the_configured_time() {
        let url = crate::test_support::silent_server().await;
        let client = MatrixClient::new(&url, Secret::new("t"), Duration::from_millis(500)).unwrap();
        let started = std::time::Instant::now();
        let err = client.probe().await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, MatrixError::Timeout(t) if t == Duration::from_millis(500)), "{err}");
        assert!(err.is_transient());
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "took {took:?}");
    }

    #[tokio::test]
    async fn unreachable_homeserver_is_a_clear_transient_error() {
        let url = format!("http://127.0.0.1:{}", crate::test_support::closed_port());
        let client = MatrixClient::new(&url, Secret::new("t"), Duration::from_secs(2)).unwrap();
        let err = client.versions().await.unwrap_err();
        assert!(matches!(err, MatrixError::Unreachable { .. }), "{err}");
        assert!(err.is_transient());
        assert!(err.to_string().contains(url.trim_start_matches("http://")), "{err}");
    }
}
