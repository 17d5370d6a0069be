//! Watching a job: its current view first, then every change until it
//! reaches a final state, for any door to stream.

use super::Engine;
use super::view::JobView;
use crate::audit::EventKind;
use crate::identity::Identity;
use crate::refusal::Refusal;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;

/// One event of a watch.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What changed the job: `decision` for the first event (the job as it
    /// stands); `None` when the kind is unknown (a watcher that fell
    /// behind re-reads the job, or another replica named a kind this one
    /// does not know).
    pub kind: Option<EventKind>,
    /// When the change happened.
    pub at: i64,
    pub view: JobView,
}

impl Engine {
    /// The job as it stands, then each change until it is final. The
    /// caller's right to see it is checked before the stream starts.
    pub async fn watch(
        self: &Arc<Self>,
        who: &Identity,
        job_id: &str,
    ) -> Result<ReceiverStream<Result<WatchEvent, Refusal>>, Refusal> {
        // Subscribe before reading, so no change falls between the two.
        let mut changes = self.subscribe();
        let first = self.get_job(who, job_id).await?;
        // Counted against the caller until the stream ends or its reader
        // goes away.
        let slot = self.watch_slot(who)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (engine, who, job_id) = (self.clone(), who.clone(), job_id.to_owned());
        tokio::spawn(async move {
            let _slot = slot;
            let mut version = first.record.version;
            let done = first.state.is_final();
            let event = WatchEvent {
                kind: Some(EventKind::Decision),
                at: first.record.updated_at,
                view: first,
            };
            if tx.send(Ok(event)).await.is_err() || done {
                return;
            }
            loop {
                let change = tokio::select! {
                    c = changes.recv() => c,
                    // The reader hung up: end now, not at the next change.
                    _ = tx.closed() => return,
                };
                let (kind, at, record) = match change {
                    Ok(c) => (c.kind, c.at, c.record),
                    Err(RecvError::Lagged(_)) => {
                        // Too far behind: re-read the record itself.
                        match engine.get_job(&who, &job_id).await {
                            Ok(v) => (None, v.record.updated_at, Arc::new(v.record)),
                            Err(r) => {
                                let _ = tx.send(Err(r)).await;
                                return;
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
                };
                if record.job_id != job_id || record.version <= version {
                    continue;
                }
                version = record.version;
                let view = JobView::new(Arc::unwrap_or_clone(record), engine.now());
                let done = view.state.is_final();
                if tx.send(Ok(WatchEvent { kind, at, view })).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
