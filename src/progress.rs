//! One message edited in place to show how slow work goes: a job's status, a streamed answer, a
//! coding agent's progress. Updates are coalesced to at most one edit per interval and never wait
//! for the homeserver; the last text always lands; [`Progress::finish`] ends it with a final text.
//! Edits are cosmetic (clients show the latest), so a failed intermediate edit is only logged.

use crate::matrix::{MatrixClient, MatrixError, txn_id_for};
use ruma::events::room::message::RoomMessageEventContent;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, TransactionId};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Who shows the message, and where.
#[derive(Clone, Debug)]
pub struct Poster {
    pub matrix: MatrixClient,
    pub user: OwnedUserId,
    pub room: OwnedRoomId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Update {
    text: String,
    last: bool,
}

/// The handle of one message being edited in place.
#[derive(Debug)]
pub struct Progress {
    event_id: OwnedEventId,
    updates: watch::Sender<Update>,
    editor: JoinHandle<Result<(), MatrixError>>,
}

impl Progress {
    /// Posts `first` (whose text is `first_text`) as a new message with `txn` (deterministic, so a
    /// replay after a crash is deduplicated by the homeserver).
    pub async fn start(
        poster: Poster,
        txn: &TransactionId,
        first: &RoomMessageEventContent,
        first_text: &str,
        interval: Duration,
    ) -> Result<Self, MatrixError> {
        let event_id = poster.matrix.send_message(&poster.user, &poster.room, txn, first).await?;
        Ok(Self::spawn(poster, event_id, Some(first_text.to_owned()), interval))
    }

    /// Takes over a message posted earlier (before a restart); it changes with the next update.
    pub fn resume(poster: Poster, event_id: OwnedEventId, interval: Duration) -> Self {
        Self::spawn(poster, event_id, None, interval)
    }

    fn spawn(poster: Poster, event_id: OwnedEventId, shown: Option<String>, interval: Duration) -> Self {
        let initial = Update { text: shown.clone().unwrap_or_default(), last: false };
        let (updates, rx) = watch::channel(initial);
        let editor = tokio::spawn(edit_loop(poster, event_id.clone(), shown, rx, interval));
        Self { event_id, updates, editor }
    }

    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// Shows `text` soon: at once if the last edit is an interval old, else when it is.
    pub fn update(&self, text: impl Into<String>) {
        let text = text.into();
        self.updates.send_if_modified(|u| {
            let changed = u.text != text;
            u.text = text;
            changed
        });
    }

    /// Shows `text` as the message's last state (after the interval, if an edit just went out)
    /// and returns once it landed.
    pub async fn finish(self, text: impl Into<String>) -> Result<OwnedEventId, MatrixError> {
        let _ = self.updates.send(Update { text: text.into(), last: true });
        match self.editor.await {
            Ok(result) => result.map(|()| self.event_id),
            Err(e) => Err(MatrixError::Build(format!("the progress editor stopped: {e}"))),
        }
    }
}

/// Sends the latest update at most once per `interval` until the last one.
async fn edit_loop(
    poster: Poster,
    event_id: OwnedEventId,
    mut shown: Option<String>,
    mut rx: watch::Receiver<Update>,
    interval: Duration,
) -> Result<(), MatrixError> {
    // Edit txn ids differ per process run, so edits after a restart are not taken for replays.
    let nonce: u64 = rand::random();
    let mut edits = 0u64;
    let mut last_edit = shown.as_ref().map(|_| Instant::now());
    loop {
        if rx.changed().await.is_err() {
            return Ok(()); // the handle was dropped without finishing: nothing more to show
        }
        if let Some(at) = last_edit {
            tokio::time::sleep_until(at + interval).await;
        }
        let update = rx.borrow_and_update().clone();
        if shown.as_deref() != Some(update.text.as_str()) {
            edits += 1;
            let txn = txn_id_for(event_id.as_str(), &format!("edit-{nonce:x}-{edits}"));
            let sent = poster.matrix.edit_message(&poster.user, &poster.room, &txn, &event_id, &update.text).await;
            last_edit = Some(Instant::now());
            match sent {
                Ok(_) => shown = Some(update.text.clone()),
                Err(e) if update.last => return Err(e),
                Err(e) => tracing::warn!(error = %e, "cannot edit a progress message; the next update tries again"),
            }
        }
        if update.last {
            return Ok(());
        }
    }
}
