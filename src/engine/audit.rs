//! The auditor's operations: one job's story, verification of every
//! chain, and a streamed export.

use super::access::{job_id_arg, not_found, require};
use super::{Engine, store_refusal};
use crate::audit::{AuditEntry, ChainReport, ChainVerifier};
use crate::identity::{AUDITOR, Identity};
use crate::refusal::Refusal;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

/// The verdict of `VerifyAudit`.
#[derive(Debug, Clone)]
pub struct Verification {
    pub ok: bool,
    pub entries: u64,
    pub chains: Vec<ChainReport>,
}

/// Which entries an export streams.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// One chain, or every chain when `None`.
    pub chain: Option<String>,
    /// Only entries after this seq (of each chain).
    pub after_seq: i64,
    /// Only entries about this job.
    pub job_id: Option<String>,
    /// Only this tenant's entries.
    pub tenant: Option<String>,
}

impl ExportFilter {
    /// Whether `who` gets entry `e` under this filter: callers bound to
    /// tenants read only their tenants' entries, whatever they ask.
    fn keeps(&self, who: &Identity, e: &AuditEntry) -> bool {
        who.in_tenant(&e.tenant)
            && self.tenant.as_ref().is_none_or(|t| *t == e.tenant)
            && self.job_id.as_ref().is_none_or(|j| *j == e.job_id)
    }
}

/// How many entries are read at a time.
const PAGE: i64 = 5000;

/// Recomputes every chain of a store, naming the first bad entry of each
/// (the server and `gavel audit verify --database-url` both use this).
pub async fn verify_chains(store: &dyn Store) -> Result<Verification, StoreError> {
    let mut chains = Vec::new();
    for chain in store.chains().await? {
        let mut v = ChainVerifier::new(&chain);
        let mut after = 0;
        loop {
            let page = store.audit_page(&chain, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                v.push(e);
            }
        }
        chains.push(v.finish());
    }
    Ok(Verification {
        ok: chains.iter().all(|c| c.ok),
        entries: chains.iter().map(|c| c.entries).sum(),
        chains,
    })
}

impl Engine {
    /// A job's entries, in order; with `tenant`, only that tenant's. A
    /// job the caller reads no entry of is not found.
    pub async fn job_history(
        &self,
        who: &Identity,
        job_id: &str,
        tenant: Option<&str>,
    ) -> Result<Vec<AuditEntry>, Refusal> {
        crate::observe::job(job_id);
        require(who, AUDITOR, "GetJobHistory")?;
        job_id_arg(job_id)?;
        let filter = ExportFilter {
            tenant: tenant.map(str::to_owned),
            ..ExportFilter::default()
        };
        let mut entries = self
            .store
            .audit_for_job(job_id)
            .await
            .map_err(store_refusal)?;
        entries.retain(|e| filter.keeps(who, e));
        if entries.is_empty() {
            return Err(not_found(job_id));
        }
        Ok(entries)
    }

    /// Recomputes every chain; names the first bad entry of each.
    pub async fn verify_audit(&self, who: &Identity) -> Result<Verification, Refusal> {
        require(who, AUDITOR, "VerifyAudit")?;
        verify_chains(self.store.as_ref())
            .await
            .map_err(store_refusal)
    }

    /// The entries the filter selects, chain by chain in order. The caller's
    /// right to read the log is checked before the stream starts.
    pub async fn export_audit(
        self: &Arc<Self>,
        who: &Identity,
        filter: ExportFilter,
    ) -> Result<ReceiverStream<Result<AuditEntry, Refusal>>, Refusal> {
        require(who, AUDITOR, "ExportAudit")?;
        let chains = match &filter.chain {
            Some(c) => vec![c.clone()],
            None => self.store.chains().await.map_err(store_refusal)?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let store = self.store.clone();
        let who = who.clone();
        tokio::spawn(async move {
            for chain in chains {
                let mut after = filter.after_seq;
                loop {
                    let page = match store.audit_page(&chain, after, PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = tx.send(Err(store_refusal(e))).await;
                            return;
                        }
                    };
                    let Some(last) = page.last() else { break };
                    after = last.seq;
                    for e in page {
                        if !filter.keeps(&who, &e) {
                            continue;
                        }
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
