//! Why a request was refused: a machine-readable reason (named like the
//! `Reason` enum of the wire contract), the field at fault when there is
//! one, and a message for people. Every door reports refusals with these;
//! each door maps them to its own codes (`service::status`). Pure: no
//! transport here.

use std::fmt;

/// Defines the reasons once: each variant and its wire name.
macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Every refusal reason; names match `gavel.v1.Reason` without its
        /// prefix. Bind's reasons come first, in the order its checks run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The name as it appears on the wire and in CLI output, e.g. `HASH_MISMATCH`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    NotFound => "NOT_FOUND",
    HashMismatch => "HASH_MISMATCH",
    SnapshotMismatch => "SNAPSHOT_MISMATCH",
    SnapshotRevoked => "SNAPSHOT_REVOKED",
    SnapshotStale => "SNAPSHOT_STALE",
    Denied => "DENIED",
    Pending => "PENDING",
    Rejected => "REJECTED",
    Expired => "EXPIRED",
    Cancelled => "CANCELLED",
    AlreadyBound => "ALREADY_BOUND",
    InvalidArgument => "INVALID_ARGUMENT",
    Unauthenticated => "UNAUTHENTICATED",
    PermissionDenied => "PERMISSION_DENIED",
    AlreadyExists => "ALREADY_EXISTS",
    Unavailable => "UNAVAILABLE",
    Internal => "INTERNAL",
    NotEligible => "NOT_ELIGIBLE",
    SelfApproval => "SELF_APPROVAL",
    AlreadyApproved => "ALREADY_APPROVED",
    ReasonRequired => "REASON_REQUIRED",
    NotPending => "NOT_PENDING",
    ChannelNotAllowed => "CHANNEL_NOT_ALLOWED",
    StaleReview => "STALE_REVIEW",
    NotOverridable => "NOT_OVERRIDABLE",
    NotRequester => "NOT_REQUESTER",
    SelfAcknowledge => "SELF_ACKNOWLEDGE",
    NotBound => "NOT_BOUND",
    BindIdMismatch => "BIND_ID_MISMATCH",
    PolicyInvalid => "POLICY_INVALID",
    GateUnsatisfiable => "GATE_UNSATISFIABLE",
    UnknownTenant => "UNKNOWN_TENANT",
    NoTenantPolicy => "NO_TENANT_POLICY",
    ResourceExhausted => "RESOURCE_EXHAUSTED",
}

impl Reason {
    /// The reason a wire name names, when it names one.
    pub fn parse(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

impl From<crate::job::JobError> for Refusal {
    fn from(e: crate::job::JobError) -> Refusal {
        Refusal::field(Reason::InvalidArgument, e.field.clone(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_parses_from_its_name() {
        for &r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
        }
        assert_eq!(Reason::parse("REASON_NOT_FOUND"), None);
    }
}
