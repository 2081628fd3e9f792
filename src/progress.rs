//! One message edited in place to show how slow work goes: a job's status, a streamed answer, a
//! coding agent's progress. Updates are coalesced to at most one edit per interval and never wait
//! for the homeserver; the last text always lands. [`Progress::finish`] ends it with a final text,
//! sent at once (the end of a stream is shown without delay; only the edits on the way are
//! coalesced). Edits are cosmetic (clients show the latest), so a failed intermediate edit is only
//! logged.

use crate::matrix::markdown::Md;
use crate::matrix::{MatrixClient, MatrixError, txn_id_for};
use ruma::events::Mentions;
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
    /// Whom the message mentions; kept in every edit's new content.
    pub mentions: Option<Mentions>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Update {
    text: Md,
    last: bool,
    /// The last update keeps to the interval too.
    paced: bool,
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
        first_text: &Md,
        interval: Duration,
    ) -> Result<Self, MatrixError> {
        let event_id = poster.matrix.send_message(&poster.user, &poster.room, txn, first).await?;
        Ok(Self::spawn(poster, event_id, Some(first_text.clone()), interval))
    }

    /// Takes over a message posted earlier (before a restart); it changes with the next update.
    pub fn resume(poster: Poster, event_id: OwnedEventId, interval: Duration) -> Self {
        Self::spawn(poster, event_id, None, interval)
    }

    fn spawn(poster: Poster, event_id: OwnedEventId, shown: Option<Md>, interval: Duration) -> Self {
        let initial = Update { text: shown.clone().unwrap_or_default(), last: false, paced: false };
        let (updates, rx) = watch::channel(initial);
        let editor = tokio::spawn(edit_loop(poster, event_id.clone(), shown, rx, interval));
        Self { event_id, updates, editor }
    }

    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// Shows `text` soon: at once if the last edit is an interval old, else when it is.
    pub fn update(&self, text: Md) {
        self.updates.send_if_modified(|u| {
            let changed = u.text != text;
            u.text = text;
            changed
        });
    }

    /// Shows `text` as the message's last state, at once, and returns once it landed.
    pub async fn finish(self, text: Md) -> Result<OwnedEventId, MatrixError> {
        self.end(Update { text, last: true, paced: false }).await
    }

    /// Like [`Progress::finish`], but the last edit too keeps to the interval (for progress that
    /// promises at most one edit per interval, the coding agents').
    pub async fn finish_paced(self, text: Md) -> Result<OwnedEventId, MatrixError> {
        self.end(Update { text, last: true, paced: true }).await
    }

    async fn end(self, update: Update) -> Result<OwnedEventId, MatrixError> {
        let _ = self.updates.send(update);
        match self.editor.await {
            Ok(result) => result.map(|()| self.event_id),
            Err(e) => Err(MatrixError::Build(format!("the progress editor stopped: {e}"))),
        }
    }
}

/// Resolves when a last update that need not wait has been sent (or never, once the handle is gone).
async fn until_unpaced_last(rx: &mut watch::Receiver<Update>) {
    if rx.wait_for(|u| u.last && !u.paced).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sends the latest update at most once per `interval` until the last one, which goes at once.
async fn edit_loop(
    poster: Poster,
    event_id: OwnedEventId,
    mut shown: Option<Md>,
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
        let paced = |u: &Update| !u.last || u.paced;
        if let Some(at) = last_edit
            && paced(&rx.borrow())
        {
            // Coalesce: whatever arrives meanwhile replaces this update. A last update that is not
            // paced cuts the wait short.
            tokio::select! {
                () = tokio::time::sleep_until(at + interval) => {}
                () = until_unpaced_last(&mut rx) => {}
            }
        }
        let update = rx.borrow_and_update().clone();
        if update.last
            && update.paced
            && let Some(at) = last_edit
        {
            tokio::time::sleep_until(at + interval).await;
        }
        if shown.as_ref() != Some(&update.text) {
            edits += 1;
            let txn = txn_id_for(event_id.as_str(), &format!("edit-{nonce:x}-{edits}"));
            let sent = poster
                .matrix
                .edit_message(&poster.user, &poster.room, &txn, &event_id, &update.text, poster.mentions.as_ref())
                .await;
            last_edit = Some(Instant::now());
            match sent {
                Ok(_) => shown = Some(update.text.clone()),
                Err(e) if update.last => {
                    tracing::warn!(error = %e, "cannot show a progress message's last state");
                    return Err(e);
                }
                Err(e) => tracing::warn!(error = %e, "cannot edit a progress message; the next update tries again"),
            }
        }
        if update.last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::markdown::md;
    use crate::secret::Secret;
    use ruma::events::room::message::RoomMessageEventContent;
    use std::sync::{Arc, Mutex};

    /// A homeserver that accepts sends and remembers each body with its time.
    async fn homeserver() -> (MatrixClient, Arc<Mutex<Vec<(std::time::Instant, serde_json::Value)>>>) {
        let sent: Arc<Mutex<Vec<(std::time::Instant, serde_json::Value)>>> = Arc::default();
        let log = sent.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut log = log.lock().unwrap();
                log.push((std::time::Instant::now(), value));
                axum::Json(serde_json::json!({"event_id": format!("$e{}", log.len())}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (MatrixClient::new(&url, Secret::new("t"), Duration::from_secs(5)).unwrap(), sent)
    }

    fn new_text(v: &serde_json::Value) -> &str {
        v["m.new_content"]["body"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn updates_are_coalesced_and_the_last_text_lands_at_once() {
        let (matrix, sent) = homeserver().await;
        let poster = Poster {
            matrix,
            user: ruma::user_id!("@agent:x.y").to_owned(),
            room: ruma::room_id!("!r:x.y").to_owned(),
            mentions: None,
        };
        let interval = Duration::from_millis(200);
        let txn = txn_id_for("$t", "p");
        let first = RoomMessageEventContent::notice_plain("0");
        let progress = Progress::start(poster, &txn, &first, &Md::lit("0"), interval).await.unwrap();
        let started = std::time::Instant::now();
        for i in 1..=50 {
            progress.update(md!("{}", i));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before_finish = std::time::Instant::now();
        progress.finish(Md::lit("done")).await.unwrap();
        let finished = std::time::Instant::now();

        let sent = sent.lock().unwrap().clone();
        let edits: Vec<&(std::time::Instant, serde_json::Value)> = sent[1..].iter().collect();
        let span = before_finish - started;
        let allowed = (span.as_millis() / interval.as_millis()) as usize + 1;
        let intermediate = edits.len() - 1;
        assert!(intermediate <= allowed, "{intermediate} edits in {span:?} at one per {interval:?}");
        assert!(intermediate >= 2, "updates reach the room while they come: {intermediate}");
        for pair in edits[..intermediate].windows(2) {
            assert!(pair[1].0 - pair[0].0 >= interval - Duration::from_millis(5), "edits closer than the interval");
        }
        assert_eq!(new_text(&edits[intermediate].1), "done", "the last text lands");
        assert!(finished - before_finish < interval, "the last text is not held back");
    }

    #[tokio::test]
    async fn a_paced_finish_keeps_to_the_interval_too() {
        let (matrix, sent) = homeserver().await;
        let poster = Poster {
            matrix,
            user: ruma::user_id!("@agent:x.y").to_owned(),
            room: ruma::room_id!("!r:x.y").to_owned(),
            mentions: None,
        };
        let interval = Duration::from_millis(300);
        let first = RoomMessageEventContent::notice_plain("0");
        let progress = Progress::start(poster, &txn_id_for("$t", "p"), &first, &Md::lit("0"), interval).await.unwrap();
        progress.update(Md::lit("1"));
        tokio::time::sleep(interval + Duration::from_millis(50)).await; // "1" has gone out
        progress.finish_paced(Md::lit("done")).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        let (one, done) = (&sent[1], &sent[2]);
        assert_eq!((new_text(&one.1), new_text(&done.1)), ("1", "done"));
        assert!(done.0 - one.0 >= interval - Duration::from_millis(5), "{:?}", done.0 - one.0);
    }

    #[tokio::test]
    async fn a_resumed_message_is_edited_with_the_next_update() {
        let (matrix, sent) = homeserver().await;
        let poster = Poster {
            matrix,
            user: ruma::user_id!("@agent:x.y").to_owned(),
            room: ruma::room_id!("!r:x.y").to_owned(),
            mentions: None,
        };
        let earlier = ruma::event_id!("$earlier").to_owned();
        let progress = Progress::resume(poster, earlier, Duration::from_millis(100));
        progress.update(Md::lit("again"));
        progress.finish(Md::lit("again, done")).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        assert!(sent.iter().all(|(_, v)| v["m.relates_to"]["event_id"] == "$earlier"), "only edits of it");
        assert_eq!(new_text(&sent.last().unwrap().1), "again, done");
    }
}
