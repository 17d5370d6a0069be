//! The auditor's operations: one job's story, verification of every
//! chain, and a streamed export.

use super::access::{job_id_arg, not_found, require};
use super::{Engine, store_refusal};
use crate::audit::{AuditEntry, ChainReport, ChainVerifier};
use crate::checkpoint::{self, Checkpoint};
use crate::identity::{AUDITOR, Identity};
use crate::refusal::{Reason, Refusal};
use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
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

/// Recomputes every chain of a store, naming the first bad entry of each,
/// and holds each chain to the `checkpoints` (already verified) signed
/// for it: a chain must still reach each one's seq with its hash (the
/// server and `gavel audit verify --database-url` both use this).
pub async fn verify_chains(
    store: &dyn Store,
    checkpoints: &[Checkpoint],
) -> Result<Verification, StoreError> {
    let mut names = store.chains().await?;
    // A chain deleted whole still has its checkpoints.
    for c in checkpoints {
        if !names.contains(&c.chain) {
            names.push(c.chain.clone());
        }
    }
    let mut chains = Vec::new();
    for chain in names {
        let anchored: HashSet<i64> = checkpoints
            .iter()
            .filter(|c| c.chain == chain)
            .map(|c| c.seq)
            .collect();
        let mut hashes = HashMap::new();
        let mut v = ChainVerifier::new(&chain);
        let mut after = 0;
        loop {
            let page = store.audit_page(&chain, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                v.push(e);
                if anchored.contains(&e.seq) {
                    hashes.insert(e.seq, e.entry_hash.clone());
                }
            }
        }
        let mut report = v.finish();
        // A chain that verified from genesis holds seqs 1..=entries.
        if report.ok
            && let Some((seq, why)) = checkpoint::check_chain(
                checkpoints,
                &chain,
                |s| hashes.get(&s).cloned(),
                report.entries as i64,
            )
        {
            report.ok = false;
            report.first_bad_seq = Some(seq);
            report.problem = Some(why);
        }
        chains.push(report);
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

    /// Recomputes every chain; names the first bad entry of each. Each
    /// signed checkpoint given must verify against this server's key, and
    /// its chain must still hold it.
    pub async fn verify_audit(
        &self,
        who: &Identity,
        checkpoints: &[String],
    ) -> Result<Verification, Refusal> {
        require(who, AUDITOR, "VerifyAudit")?;
        let jwks = self.signer.jwks();
        let checkpoints = checkpoints
            .iter()
            .enumerate()
            .map(|(i, jws)| {
                Checkpoint::verify(jws, &jwks).map_err(|e| {
                    Refusal::field(
                        Reason::InvalidArgument,
                        format!("checkpoints[{i}]"),
                        format!("not a checkpoint signed by this server's key: {}", e.0),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        verify_chains(self.store.as_ref(), &checkpoints)
            .await
            .map_err(store_refusal)
    }

    /// Signs the head of every chain as the log holds it now (auditors).
    pub async fn sign_checkpoints(&self, who: &Identity) -> Result<Vec<String>, Refusal> {
        require(who, AUDITOR, "SignCheckpoints")?;
        let mut out = Vec::new();
        for chain in self.store.chains().await.map_err(store_refusal)? {
            if let Some((_, jws)) = self.checkpoint(&chain).await? {
                out.push(jws);
            }
        }
        Ok(out)
    }

    /// One chain's head, signed; `None` for a chain with no entries.
    pub async fn checkpoint(&self, chain: &str) -> Result<Option<(Checkpoint, String)>, Refusal> {
        let last = self.store.audit_last(chain).await.map_err(store_refusal)?;
        Ok(last.map(|e| {
            let c = Checkpoint {
                chain: e.chain,
                seq: e.seq,
                entry_hash: e.entry_hash,
                at: self.now(),
            };
            let jws = c.sign(&self.signer);
            (c, jws)
        }))
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
