//! The sweeper's work: jobs whose deadline passed are expired, jobs pending
//! past their SLA are escalated. Every replica sweeps; each change is a
//! guarded transition, so a job is expired or escalated once.

use super::{Engine, store_refusal};
use crate::approval::Command;
use crate::refusal::Refusal;
use crate::store::TransitionError;

/// The most jobs one sweep looks at.
const SWEEP_LIMIT: i64 = 1000;

impl Engine {
    /// Expires jobs past their deadline and escalates jobs past their SLA.
    /// Returns (expired, escalated).
    pub async fn sweep(&self) -> Result<(usize, usize), Refusal> {
        let now = self.now();
        let ids = self
            .store
            .due(now, SWEEP_LIMIT)
            .await
            .map_err(store_refusal)?;
        let (mut expired, mut escalated) = (0, 0);
        for id in ids {
            if self.sweep_step(&id, Command::Expire, now).await? {
                expired += 1;
                tracing::info!(job_id = %id, "job expired");
            } else if self.sweep_step(&id, Command::Escalate, now).await? {
                escalated += 1;
                tracing::warn!(job_id = %id, "job escalated past its SLA");
            }
        }
        self.purge_sessions().await?;
        Ok((expired, escalated))
    }

    /// One sweep transition; false when it does not apply (any more).
    async fn sweep_step(&self, id: &str, command: Command, now: i64) -> Result<bool, Refusal> {
        let kind = command.kind();
        match self.store.transition(id, command, now).await {
            Ok(r) => {
                self.changed_here(kind, &r);
                Ok(true)
            }
            Err(TransitionError::Refused(_)) | Err(TransitionError::NotFound) => Ok(false),
            Err(TransitionError::Store(e)) => Err(store_refusal(e)),
        }
    }
}
