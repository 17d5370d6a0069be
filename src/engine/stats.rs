//! Approval statistics over a window of the audit log (`gavel stats`,
//! `GET /api/v1/stats`, `/ui/stats`): the entries are read chain by chain
//! and folded by [`crate::stats::Collector`], which keeps a few fields per
//! entry, not the entries.

use super::{Engine, store_refusal};
use crate::identity::{AUDITOR, Identity, OPERATOR};
use crate::refusal::{Reason, Refusal};
use crate::stats::{Collector, Report};

/// The longest window a report covers: a year.
pub const MAX_WINDOW_SECS: u64 = 365 * 86_400;

/// How many entries are read at a time.
const PAGE: i64 = 5000;

impl Engine {
    /// The statistics of the jobs decided in the last `window_secs`, for
    /// one tenant or every tenant the caller reads. Operators and auditors
    /// read them; callers bound to tenants see only their tenants' jobs.
    pub async fn stats(
        &self,
        who: &Identity,
        window_secs: u64,
        tenant: Option<&str>,
    ) -> Result<Report, Refusal> {
        if !(who.has(OPERATOR) || who.has(AUDITOR)) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!(
                    "`{}` may not read approval statistics (operator or auditor)",
                    who.name
                ),
            ));
        }
        if window_secs == 0 || window_secs > MAX_WINDOW_SECS {
            return Err(Refusal::field(
                Reason::InvalidArgument,
                "since",
                "the window must be between 1 second and 365 days",
            ));
        }
        let tenant = tenant.filter(|t| !t.is_empty());
        if let Some(t) = tenant {
            // Another tenant's name answers like an undeclared one.
            if !self.options.tenancy.is_declared(t) || !who.in_tenant(t) {
                return Err(Refusal::field(
                    Reason::NotFound,
                    "tenant",
                    format!("no tenant `{t}` you can read"),
                ));
            }
        }
        let until = self.now();
        let since = until.saturating_sub((window_secs as i64).saturating_mul(1000));
        let mut collector = Collector::new(since, until);
        for chain in self.store.chains().await.map_err(store_refusal)? {
            let mut after = 0;
            loop {
                let page = self
                    .store
                    .audit_page(&chain, after, PAGE)
                    .await
                    .map_err(store_refusal)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in &page {
                    if who.in_tenant(&e.tenant) && tenant.is_none_or(|t| t == e.tenant) {
                        collector.push(e);
                    }
                }
            }
        }
        Ok(collector.finish(tenant, self.options.stats))
    }
}
