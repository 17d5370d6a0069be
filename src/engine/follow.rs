//! Following other replicas: snapshot activations and job changes from the
//! store's announcements (PostgreSQL LISTEN/NOTIFY), with polling of the
//! active snapshots as a backstop.

use super::Engine;
use crate::audit::EventKind;
use crate::store::StoreEvent;
use std::sync::Weak;
use std::time::Duration;

/// How often replicas re-check the active snapshots when no announcement
/// arrives (the backstop for LISTEN/NOTIFY).
const SNAPSHOT_POLL: Duration = Duration::from_millis(500);

/// Runs until the engine is dropped.
pub(super) async fn follow_changes(engine: Weak<Engine>) {
    let mut events = match engine.upgrade() {
        Some(e) => e.store.listen().await,
        None => return,
    };
    let mut tick = tokio::time::interval(SNAPSHOT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = match &mut events {
            Some(rx) => tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => Some(ev),
                    None => {
                        // The listener is gone: polling alone from now on.
                        events = None;
                        None
                    }
                },
                _ = tick.tick() => None,
            },
            None => {
                tick.tick().await;
                None
            }
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match event {
            Some(StoreEvent::Job { id, kind, version }) => {
                engine.republish(&id, kind, version).await
            }
            Some(StoreEvent::Snapshot { .. }) | None => engine.refresh_active().await,
        }
    }
}

impl Engine {
    /// Re-reads every scope's active snapshot and switches to those another
    /// replica activated.
    async fn refresh_active(&self) {
        let stored = match self.store.active_snapshots().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "could not check the active snapshots");
                return;
            }
        };
        for (scope, id) in stored {
            if self.active_in(&scope).is_some_and(|a| a.id == id) {
                continue;
            }
            match self.compiled_by_id(&id).await {
                Ok(snap) => {
                    tracing::info!(snapshot = %id, %scope, "switched to the snapshot another replica activated");
                    self.snapshots.set_active(&scope, snap);
                }
                Err(e) => {
                    tracing::error!(error = %e, snapshot = %id, "cannot load the active snapshot")
                }
            }
        }
    }

    /// Publishes a job another replica changed, for local watchers: the
    /// same kind whichever replica made the change.
    async fn republish(&self, job_id: &str, kind: Option<EventKind>, version: i64) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        // Only the change announced: a later one has its own announcement.
        if let Ok(Some(r)) = self.store.job(job_id).await
            && r.version == version
        {
            self.publish(kind, &r);
        }
    }
}
