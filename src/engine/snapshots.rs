//! Policy snapshots: the registry of each scope's active compiled snapshot
//! (read lock-free on every decision, swapped whole on reload), the cache
//! of recently compiled ones, and the operator's policy operations —
//! reload, show, list, revoke, explain.

use super::access::require;
use super::transitions::{bad_page_token, page_size};
use super::{Engine, InitialPolicy, Page, store_refusal};
use crate::identity::{Identity, OPERATOR};
use crate::job::{Job, JobHash, JobInput};
use crate::policy::{self, Finding, Scope, Severity, Snapshot, SnapshotId};
use crate::refusal::{Reason, Refusal};
use crate::store::SnapshotRow;
use arc_swap::ArcSwap;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The result of ReloadPolicy.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub snapshot: SnapshotRow,
    /// Whether the snapshot is now its scope's active one.
    pub active: bool,
    pub activated: bool,
    pub unchanged: bool,
    pub warnings: Vec<Finding>,
}

/// A snapshot and whether it is the active one.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    pub row: SnapshotRow,
    pub active: bool,
}

/// Compiled snapshots kept besides the active ones, for a quick rollback
/// or a replica following a reload back.
const KEEP_INACTIVE: usize = 2;
/// At most this many rules among them: a compiled 10,000-rule snapshot
/// holds tens of megabytes, and keeping the last two of those tripled the
/// memory of a server reloading a large policy (BENCHMARKS.md, issue 16).
/// A snapshot not kept is compiled again when it is needed again.
const KEEP_INACTIVE_RULES: usize = 2_000;

/// Each scope's active snapshot, and recently compiled others.
#[derive(Default)]
pub(super) struct Registry {
    active: ArcSwap<HashMap<Scope, Arc<Snapshot>>>,
    /// Compiled snapshots by id, oldest first.
    compiled: Mutex<VecDeque<Arc<Snapshot>>>,
}

impl Registry {
    /// The active snapshot of `scope`.
    pub(super) fn active(&self, scope: &Scope) -> Option<Arc<Snapshot>> {
        self.active.load().get(scope).cloned()
    }

    /// Makes `snap` the active snapshot of `scope`; true if it was not already.
    pub(super) fn set_active(&self, scope: &Scope, snap: Arc<Snapshot>) -> bool {
        let mut changed = false;
        self.active.rcu(|current| {
            let mut next = HashMap::clone(current);
            changed = next
                .insert(scope.clone(), snap.clone())
                .is_none_or(|old| old.id != snap.id);
            next
        });
        self.remember(&snap);
        changed
    }

    pub(super) fn is_active(&self, id: &SnapshotId) -> bool {
        self.active.load().values().any(|s| s.id == *id)
    }

    fn cached(&self, id: &SnapshotId) -> Option<Arc<Snapshot>> {
        let compiled = self.compiled.lock().ok()?;
        compiled.iter().find(|s| s.id == *id).cloned()
    }

    /// Keeps a compiled snapshot for reuse: every active one and the most
    /// recent few others.
    fn remember(&self, snap: &Arc<Snapshot>) {
        let Ok(mut compiled) = self.compiled.lock() else {
            return;
        };
        compiled.retain(|s| s.id != snap.id);
        compiled.push_back(snap.clone());
        let active = self.active.load();
        let inactive = |s: &Arc<Snapshot>| !active.values().any(|a| a.id == s.id);
        let over = |compiled: &VecDeque<Arc<Snapshot>>| {
            let kept = compiled.iter().filter(|s| inactive(s));
            let rules: usize = kept.clone().map(|s| s.policy.doc.rules.len()).sum();
            kept.count() > KEEP_INACTIVE || rules > KEEP_INACTIVE_RULES
        };
        while over(&compiled) {
            match compiled.iter().position(inactive) {
                Some(oldest) => compiled.remove(oldest),
                None => break,
            };
        }
    }
}

/// Loads a policy on a blocking thread: compiling a large policy takes
/// hundreds of milliseconds, which must not stall the request threads.
async fn load_off_thread(
    source: &str,
    file: &str,
) -> Result<Result<policy::Loaded, policy::PolicyError>, Refusal> {
    let (source, file) = (source.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || policy::load(&source, &file))
        .await
        .map_err(|_| Refusal::new(Reason::Internal, "policy validation was interrupted"))
}

/// The row to store for a freshly loaded snapshot. Its source and
/// canonical JSON move into the row: the compiled snapshots the engine
/// keeps never carry them (megabytes for a large policy), and whoever
/// wants them reads the stored row.
fn snapshot_row(s: &mut Snapshot, now: i64) -> SnapshotRow {
    SnapshotRow {
        id: s.id.clone(),
        name: s.name().to_owned(),
        sha256: s.id.sha256().to_owned(),
        version: None,
        source: std::mem::take(&mut s.source),
        canonical_json: std::mem::take(&mut s.canonical_json),
        rule_count: s.policy.rules().len() as i64,
        created_at: now,
        activated_at: None,
        activated_by: None,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
    }
}

impl Engine {
    /// The active snapshot that decides (or explains) `job` for `who`: its
    /// tenant's, or the `system` one. The caller must work in the job's
    /// tenant; that is checked first, so a refusal never says whether a
    /// tenant the caller is not in exists.
    pub(super) fn snapshot_for(&self, who: &Identity, job: &Job) -> Result<Arc<Snapshot>, Refusal> {
        if !who.in_tenant(&job.tenant) {
            return Err(Refusal::field(
                Reason::PermissionDenied,
                "job.tenant",
                format!("`{}` does not work in tenant `{}`", who.name, job.tenant),
            ));
        }
        let scope = self
            .options
            .tenancy
            .scope_for(&job.tenant, |s| self.snapshots.active(s).is_some())?;
        self.snapshots
            .active(&scope)
            .ok_or_else(|| Refusal::new(Reason::Unavailable, "no active policy"))
    }

    /// At start: every scope's stored active snapshot, and the initial
    /// policy for `system` when there is none (or when it is forced).
    pub(super) async fn load_snapshots(
        &self,
        initial: Option<InitialPolicy>,
    ) -> Result<(), Refusal> {
        let system = Scope::system();
        let stored = self.store.active_snapshots().await.map_err(store_refusal)?;
        let has_system = stored.iter().any(|(s, _)| *s == system);
        for (scope, id) in &stored {
            if *scope == system && initial.as_ref().is_some_and(|p| p.force) {
                continue;
            }
            let snap = self.compiled_by_id(id).await?;
            self.check_gates(scope, &snap, "stored")?;
            self.snapshots.set_active(scope, snap);
        }
        match initial {
            Some(p) if p.force || !has_system => {
                self.activate_source(&system, &p.source, &p.file, "system")
                    .await?;
                Ok(())
            }
            _ if has_system => Ok(()),
            _ => Err(Refusal::new(
                Reason::PolicyInvalid,
                "the database has no active policy and none was given; pass --policy FILE",
            )),
        }
    }

    /// The compiled form of a stored snapshot named by id: from the cache,
    /// or read and compiled now.
    pub(super) async fn compiled_by_id(&self, id: &SnapshotId) -> Result<Arc<Snapshot>, Refusal> {
        if let Some(s) = self.snapshots.cached(id) {
            return Ok(s);
        }
        let row = self
            .store
            .snapshot(id.as_str())
            .await
            .map_err(store_refusal)?
            .ok_or_else(|| {
                Refusal::new(
                    Reason::Internal,
                    format!("active snapshot {id} is not stored"),
                )
            })?;
        self.compiled_snapshot(&row).await
    }

    /// The compiled form of a stored snapshot, from the cache or compiled now.
    pub(super) async fn compiled_snapshot(
        &self,
        row: &SnapshotRow,
    ) -> Result<Arc<Snapshot>, Refusal> {
        if let Some(s) = self.snapshots.cached(&row.id) {
            return Ok(s);
        }
        let loaded = load_off_thread(&row.source, row.id.as_str())
            .await?
            .map_err(|e| {
                Refusal::new(
                    Reason::Internal,
                    format!("stored snapshot {} no longer loads: {e}", row.id),
                )
            })?;
        if loaded.snapshot.id != row.id {
            return Err(Refusal::new(
                Reason::Internal,
                format!(
                    "stored snapshot {} hashes to {} with this version of gavel",
                    row.id, loaded.snapshot.id
                ),
            ));
        }
        let mut snap = loaded.snapshot;
        // Kept compiled without its texts; the stored row has them.
        snap.source = String::new();
        snap.canonical_json = String::new();
        let snap = Arc::new(snap);
        self.snapshots.remember(&snap);
        Ok(snap)
    }

    /// Refuses a snapshot whose gates no set of distinct configured people can fill.
    /// A tenant's gates are filled by the people who work in it.
    fn check_gates(&self, scope: &Scope, snap: &Snapshot, file: &str) -> Result<(), Refusal> {
        if self.directory.is_empty() {
            return Ok(());
        }
        let tenant = (*scope != Scope::system()).then(|| scope.as_str());
        let people = self.directory.people_in(tenant);
        let bad = policy::unsatisfiable_gates(snap.policy.doc(), &people, file);
        match bad.first() {
            None => Ok(()),
            Some(f) => Err(Refusal::new(Reason::GateUnsatisfiable, f.message.clone())),
        }
    }

    async fn validate_policy(
        &self,
        scope: &Scope,
        source: &str,
        file: &str,
    ) -> Result<(Snapshot, Vec<Finding>), Refusal> {
        let loaded = load_off_thread(source, file).await?.map_err(|e| {
            let lines: Vec<String> = e
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(Finding::to_string)
                .collect();
            Refusal::field(Reason::PolicyInvalid, "source", lines.join("\n"))
        })?;
        self.check_gates(scope, &loaded.snapshot, file)?;
        Ok((loaded.snapshot, loaded.warnings))
    }

    async fn activate_source(
        &self,
        scope: &Scope,
        source: &str,
        file: &str,
        actor: &str,
    ) -> Result<Reloaded, Refusal> {
        let (mut snap, warnings) = self.validate_policy(scope, source, file).await?;
        self.check_named_for(scope, &snap, file)?;
        let now = self.now();
        let row = snapshot_row(&mut snap, now);
        let stored = self
            .store
            .activate_snapshot(scope, row, actor, now)
            .await
            .map_err(store_refusal)?;
        self.snapshots.set_active(scope, Arc::new(snap));
        Ok(Reloaded {
            snapshot: stored.snapshot,
            active: true,
            activated: true,
            unchanged: !stored.changed,
            warnings,
        })
    }

    /// Which scope a policy operation naming `tenant` works on, once the
    /// caller may work there: its own tenants, and the `system` policy
    /// only for global operators.
    fn scope_for_operator(&self, who: &Identity, tenant: &str) -> Result<Scope, Refusal> {
        if tenant.is_empty() {
            if !who.tenants.is_global() && self.options.tenancy.is_multi() {
                return Err(Refusal::new(
                    Reason::PermissionDenied,
                    format!(
                        "`{}` works in some tenants only; the system policy is for global operators (name a tenant)",
                        who.name
                    ),
                ));
            }
        } else if !who.in_tenant(tenant) {
            return Err(Refusal::field(
                Reason::PermissionDenied,
                "tenant",
                format!("`{}` does not work in tenant `{tenant}`", who.name),
            ));
        }
        self.options.tenancy.scope_named(tenant, "tenant")
    }

    /// A tenant's policy is named after it, so its snapshots read
    /// `cfg:<tenant>:policy#sha256:…` and belong to it alone; the system
    /// policy takes no tenant's name.
    fn check_named_for(&self, scope: &Scope, snap: &Snapshot, file: &str) -> Result<(), Refusal> {
        let name = snap.name();
        let wrong = if *scope == Scope::system() {
            self.options.tenancy.is_declared(name).then(|| {
                format!("{file}: the system policy is named `{name}`, which is a tenant's name; rename it")
            })
        } else {
            (name != scope.as_str()).then(|| {
                format!("{file}: a policy for tenant `{scope}` must be named `{scope}` (its snapshots are cfg:{scope}:policy#sha256:…); this one is named `{name}`")
            })
        };
        match wrong {
            Some(m) => Err(Refusal::field(Reason::PolicyInvalid, "source", m)),
            None => Ok(()),
        }
    }

    /// Whether `who` may see a snapshot: the system's, or its tenants'.
    /// Others are not found.
    fn check_visible(&self, who: &Identity, id: &str) -> Result<(), Refusal> {
        let owner = SnapshotId::parse(id)
            .ok()
            .and_then(|s| self.options.tenancy.owner(&s).map(str::to_owned));
        match owner {
            Some(t) if !who.in_tenant(&t) => Err(Refusal::new(
                Reason::NotFound,
                format!("no snapshot `{id}`"),
            )),
            _ => Ok(()),
        }
    }

    pub async fn reload_policy(
        &self,
        who: &crate::identity::Identity,
        tenant: &str,
        source: &str,
        file: &str,
        dry_run: bool,
    ) -> Result<Reloaded, Refusal> {
        require(who, OPERATOR, "ReloadPolicy")?;
        let scope = self.scope_for_operator(who, tenant)?;
        if dry_run {
            let (mut snap, warnings) = self.validate_policy(&scope, source, file).await?;
            self.check_named_for(&scope, &snap, file)?;
            let existing = self
                .store
                .snapshot(snap.id.as_str())
                .await
                .map_err(store_refusal)?;
            let unchanged = self.active_in(&scope).is_some_and(|a| a.id == snap.id);
            return Ok(Reloaded {
                snapshot: existing.unwrap_or_else(|| snapshot_row(&mut snap, self.now())),
                active: unchanged,
                activated: false,
                unchanged,
                warnings,
            });
        }
        let out = self
            .activate_source(&scope, source, file, &who.name)
            .await?;
        tracing::info!(snapshot = %out.snapshot.id, %scope, by = %who.name, unchanged = out.unchanged, "policy reloaded");
        Ok(out)
    }

    fn view(&self, row: SnapshotRow) -> SnapshotView {
        SnapshotView {
            active: self.snapshots.is_active(&row.id),
            row,
        }
    }

    pub async fn get_policy(
        &self,
        who: &crate::identity::Identity,
        tenant: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotView, Refusal> {
        // Approvers read the policy that asks them to approve: the page
        // links every job's snapshot to its source.
        if !(who.has(OPERATOR) || super::access::oversees_approvals(who)) {
            require(who, OPERATOR, "GetPolicy")?;
        }
        let id = if snapshot_id.is_empty() {
            // Anyone who may read policies reads the system one; a
            // tenant's, only its people.
            if !tenant.is_empty() && !who.in_tenant(tenant) {
                return Err(Refusal::new(Reason::NotFound, "no active snapshot"));
            }
            let scope = self.options.tenancy.scope_named(tenant, "tenant")?;
            self.active_in(&scope)
                .map(|s| s.id.to_string())
                .ok_or_else(|| Refusal::new(Reason::NotFound, "no active snapshot"))?
        } else {
            snapshot_id.to_owned()
        };
        self.check_visible(who, &id)?;
        let row = self
            .store
            .snapshot(&id)
            .await
            .map_err(store_refusal)?
            .ok_or_else(|| Refusal::new(Reason::NotFound, format!("no snapshot `{id}`")))?;
        Ok(self.view(row))
    }

    /// Snapshots by policy name and version, a page at a time (the token
    /// is the offset of the next page).
    pub async fn list_snapshots(
        &self,
        who: &crate::identity::Identity,
        name: Option<&str>,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<Page<SnapshotView>, Refusal> {
        require(who, OPERATOR, "ListSnapshots")?;
        let start: usize = if page_token.is_empty() {
            0
        } else {
            page_token.parse().map_err(|_| bad_page_token())?
        };
        let size = page_size(page_size_asked) as usize;
        let mut rows = self.store.snapshots(name).await.map_err(store_refusal)?;
        rows.retain(|r| self.check_visible(who, r.id.as_str()).is_ok());
        let end = start.saturating_add(size);
        let next_page_token = if end < rows.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Page {
            items: rows
                .into_iter()
                .skip(start)
                .take(size)
                .map(|row| self.view(row))
                .collect(),
            next_page_token,
        })
    }

    pub async fn revoke_snapshot(
        &self,
        who: &crate::identity::Identity,
        snapshot_id: &str,
        reason: &str,
    ) -> Result<SnapshotView, Refusal> {
        require(who, OPERATOR, "RevokeSnapshot")?;
        let id = SnapshotId::parse(snapshot_id)
            .map_err(|e| Refusal::field(Reason::InvalidArgument, "snapshot_id", e))?;
        self.check_visible(who, snapshot_id)?;
        let owner = self.options.tenancy.owner(&id).unwrap_or("");
        self.scope_for_operator(who, owner)?;
        if reason.trim().is_empty() {
            return Err(Refusal::field(
                Reason::ReasonRequired,
                "reason",
                "a reason is required",
            ));
        }
        if self.snapshots.is_active(&id) {
            return Err(Refusal::new(
                Reason::InvalidArgument,
                "the active snapshot cannot be revoked; activate another one first",
            ));
        }
        let row = self
            .store
            .revoke_snapshot(snapshot_id, owner, &who.name, reason, self.now())
            .await
            .map_err(store_refusal)?
            .ok_or_else(|| {
                Refusal::new(Reason::NotFound, format!("no snapshot `{snapshot_id}`"))
            })?;
        Ok(SnapshotView { row, active: false })
    }

    /// Explain: evaluate without recording. Operators may evaluate as another
    /// principal; everyone else is evaluated as themselves.
    pub async fn explain(
        &self,
        who: &crate::identity::Identity,
        input: JobInput,
        principal: &str,
        snapshot_id: &str,
    ) -> Result<(policy::Explanation, JobHash, SnapshotId), Refusal> {
        let principal = if principal.is_empty() || principal == who.name {
            who.name.clone()
        } else {
            require(who, OPERATOR, "Explain as another principal")?;
            principal.to_owned()
        };
        let job = Job::from_input(input, &self.options.limits)?;
        let snap = if snapshot_id.is_empty() {
            self.snapshot_for(who, &job)?
        } else {
            self.check_visible(who, snapshot_id)?;
            let row = self
                .store
                .snapshot(snapshot_id)
                .await
                .map_err(store_refusal)?
                .ok_or_else(|| {
                    Refusal::new(Reason::NotFound, format!("no snapshot `{snapshot_id}`"))
                })?;
            self.compiled_snapshot(&row).await?
        };
        Ok((
            snap.policy.explain(&job, Some(&principal)),
            job.hash(),
            snap.id.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::generate::policy_yaml;

    fn compiled(rules: usize, seed: u64) -> Arc<Snapshot> {
        Arc::new(
            policy::load(&policy_yaml(rules, seed), "p.yaml")
                .unwrap()
                .snapshot,
        )
    }

    #[test]
    fn inactive_snapshots_are_kept_within_a_count_and_a_rule_budget() {
        let registry = Registry::default();
        let system = Scope::system();
        let cached = |s: &Arc<Snapshot>| registry.cached(&s.id).is_some();

        // Small ones: the active one and the two most recent others.
        let small: Vec<_> = [1, 3, 5, 7].map(|seed| compiled(3, seed)).to_vec();
        for s in &small {
            registry.set_active(&system, s.clone());
        }
        assert!(!cached(&small[0]));
        assert!(small[1..].iter().all(cached));

        // Large ones: fewer, so that their rules stay within the budget.
        let large: Vec<_> = [11, 13, 15].map(|seed| compiled(1_200, seed)).to_vec();
        for s in &large {
            registry.set_active(&system, s.clone());
        }
        let rules = |s: &Arc<Snapshot>| s.policy.doc.rules.len();
        assert!(rules(&large[0]) + rules(&large[1]) > KEEP_INACTIVE_RULES);
        assert!(cached(&large[2]), "the active one is always kept");
        assert!(cached(&large[1]), "the last one fits the budget alone");
        assert!(!cached(&large[0]), "two would not");
        assert!(
            small.iter().all(|s| !cached(s)),
            "older than the large ones"
        );
        assert_eq!(registry.active(&system).unwrap().id, large[2].id);
    }
}
