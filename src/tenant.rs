//! Tenants: several teams on one installation, each with its own active
//! policy and its own people. Pure: which scope decides a job, which
//! tenants an identity works in, which tenant owns a snapshot.
//!
//! An installation without `[tenants]` is single-tenant: a job's `tenant`
//! is a label, every job is decided under the `system` policy and every
//! identity sees every job, as before tenants existed. Once tenants are
//! declared, every job names one, every identity says which it belongs to
//! (`"*"` for global operators and auditors), and a tenant's policy is a
//! snapshot named after it: `cfg:<tenant>:policy#sha256:…`.

use crate::policy::{Scope, SnapshotId};
use crate::refusal::{Reason, Refusal};
use std::collections::{BTreeMap, BTreeSet};

/// The tenants an identity works in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tenants {
    /// Every tenant: everyone in a single-tenant installation, and global
    /// identities (`tenants = ["*"]`) in a multi-tenant one.
    #[default]
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl Tenants {
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(set) => set.contains(tenant),
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self, Tenants::All)
    }
}

/// One declared tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Decide this tenant's jobs under the `system` policy while it has
    /// none of its own. Off: Decide refuses with NO_TENANT_POLICY.
    pub system_fallback: bool,
}

/// The declared tenants (none: single-tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    tenants: BTreeMap<String, TenantConfig>,
}

/// The `tenants` entry meaning every tenant.
pub const ALL: &str = "*";

impl Tenancy {
    /// Checks the names: each a valid scope, none `system`.
    pub fn new(tenants: BTreeMap<String, TenantConfig>) -> Result<Tenancy, String> {
        for name in tenants.keys() {
            Scope::parse(name).map_err(|e| format!("tenants.{name}: {e}"))?;
            if name == Scope::SYSTEM || name == ALL {
                return Err(format!(
                    "tenants.{name}: `{name}` is reserved; choose another tenant name"
                ));
            }
        }
        Ok(Tenancy { tenants })
    }

    pub fn is_multi(&self) -> bool {
        !self.tenants.is_empty()
    }

    pub fn is_declared(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// An identity's `tenants` list as configured: absent in a
    /// single-tenant installation, required and declared in a multi-tenant one.
    pub fn membership(&self, who: &str, listed: Option<&[String]>) -> Result<Tenants, String> {
        let Some(listed) = listed else {
            return if self.is_multi() {
                Err(format!(
                    "identity `{who}`: this installation declares tenants, so every identity lists its own in `tenants` (`[\"*\"]` for every tenant)"
                ))
            } else {
                Ok(Tenants::All)
            };
        };
        if !self.is_multi() {
            return Err(format!(
                "identity `{who}`: `tenants` is set but no tenant is declared; declare each under [tenants.<name>]"
            ));
        }
        if listed.is_empty() {
            return Err(format!(
                "identity `{who}`: `tenants` is empty; list its tenants or `\"*\"`"
            ));
        }
        if listed.iter().any(|t| t == ALL) {
            return if listed.len() == 1 {
                Ok(Tenants::All)
            } else {
                Err(format!(
                    "identity `{who}`: `\"*\"` already means every tenant; list it alone"
                ))
            };
        }
        let mut set = BTreeSet::new();
        for t in listed {
            if !self.is_declared(t) {
                return Err(format!(
                    "identity `{who}`: tenant `{t}` is not declared under [tenants]"
                ));
            }
            set.insert(t.clone());
        }
        Ok(Tenants::Only(set))
    }

    /// The scope whose active policy decides a job of `tenant`, given
    /// which scopes have one.
    pub fn scope_for(
        &self,
        tenant: &str,
        has_policy: impl Fn(&Scope) -> bool,
    ) -> Result<Scope, Refusal> {
        if !self.is_multi() {
            return Ok(Scope::system());
        }
        let Some(config) = self.tenants.get(tenant) else {
            return Err(self.unknown(tenant, "job.tenant"));
        };
        let own = Scope::parse(tenant).map_err(|e| Refusal::new(Reason::Internal, e))?;
        if has_policy(&own) {
            Ok(own)
        } else if config.system_fallback {
            Ok(Scope::system())
        } else {
            Err(Refusal::new(
                Reason::NoTenantPolicy,
                format!(
                    "tenant `{tenant}` has no active policy and does not fall back to the system policy; load one with `gavel policy reload --tenant {tenant} FILE`"
                ),
            ))
        }
    }

    /// The scope a policy operation for `tenant` works on: `system` for
    /// the empty tenant, else a declared tenant.
    pub fn scope_named(&self, tenant: &str, field: &str) -> Result<Scope, Refusal> {
        if tenant.is_empty() {
            return Ok(Scope::system());
        }
        if !self.is_declared(tenant) {
            return Err(self.unknown(tenant, field));
        }
        Scope::parse(tenant).map_err(|e| Refusal::field(Reason::InvalidArgument, field, e))
    }

    /// The tenant a snapshot belongs to: the tenant it is named after, or
    /// none (the `system` policy's snapshots).
    pub fn owner<'a>(&self, snapshot: &'a SnapshotId) -> Option<&'a str> {
        let name = snapshot.name();
        self.is_declared(name).then_some(name)
    }

    fn unknown(&self, tenant: &str, field: &str) -> Refusal {
        let message = if tenant.is_empty() {
            "this installation has tenants: name one in the job's tenant".to_owned()
        } else {
            format!("no tenant `{tenant}` is declared")
        };
        Refusal::field(Reason::UnknownTenant, field, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenancy(names: &[(&str, bool)]) -> Tenancy {
        Tenancy::new(
            names
                .iter()
                .map(|(n, f)| {
                    (
                        n.to_string(),
                        TenantConfig {
                            system_fallback: *f,
                        },
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn single_tenant_decides_everything_under_system() {
        let t = Tenancy::default();
        assert_eq!(t.scope_for("anything", |_| false).unwrap(), Scope::system());
        assert_eq!(t.membership("a", None).unwrap(), Tenants::All);
        assert!(t.membership("a", Some(&["x".into()])).is_err());
    }

    #[test]
    fn a_tenant_uses_its_own_policy_then_its_fallback_then_refuses() {
        let t = tenancy(&[("pay", false), ("search", true)]);
        let pay = Scope::parse("pay").unwrap();
        assert_eq!(t.scope_for("pay", |s| *s == pay).unwrap(), pay);
        let e = t.scope_for("pay", |_| false).unwrap_err();
        assert_eq!(e.reason, Reason::NoTenantPolicy);
        assert_eq!(t.scope_for("search", |_| false).unwrap(), Scope::system());
        let e = t.scope_for("", |_| true).unwrap_err();
        assert_eq!(e.reason, Reason::UnknownTenant);
        assert_eq!(
            t.scope_for("nope", |_| true).unwrap_err().reason,
            Reason::UnknownTenant
        );
    }

    #[test]
    fn memberships_are_declared_explicit_and_star_alone() {
        let t = tenancy(&[("pay", false)]);
        assert!(t.membership("a", None).is_err());
        assert!(t.membership("a", Some(&[])).is_err());
        assert!(t.membership("a", Some(&["other".into()])).is_err());
        assert!(
            t.membership("a", Some(&["*".into(), "pay".into()]))
                .is_err()
        );
        assert_eq!(
            t.membership("a", Some(&["*".into()])).unwrap(),
            Tenants::All
        );
        let only = t.membership("a", Some(&["pay".into()])).unwrap();
        assert!(only.includes("pay") && !only.includes("x") && !only.is_global());
        assert!(Tenancy::new([("system".to_owned(), TenantConfig::default())].into()).is_err());
        assert!(Tenancy::new([("a b".to_owned(), TenantConfig::default())].into()).is_err());
    }

    #[test]
    fn snapshots_belong_to_the_tenant_they_are_named_after() {
        let t = tenancy(&[("pay", false)]);
        let hex = "a".repeat(64);
        let own = SnapshotId::parse(&format!("cfg:pay:policy#sha256:{hex}")).unwrap();
        let sys = SnapshotId::parse(&format!("cfg:default:policy#sha256:{hex}")).unwrap();
        assert_eq!(t.owner(&own), Some("pay"));
        assert_eq!(t.owner(&sys), None);
    }
}
