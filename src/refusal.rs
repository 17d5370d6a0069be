//! Why a request was refused: a machine-readable reason (the `Reason` enum of
//! the wire contract), the field at fault when there is one, and a message
//! for people. Every door reports refusals with these. Pure.

use std::fmt;

/// Defines the reasons once: each variant, its wire name, and (by the same
/// identifier) its `gavel.v1.Reason` value.
macro_rules! reasons {
    ($($variant:ident => $name:literal,)*) => {
        /// Every refusal reason; names match `gavel.v1.Reason` without its
        /// prefix. Bind's reasons come first, in the order its checks run.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum Reason {
            $($variant,)*
        }

        const ALL: &[Reason] = &[$(Reason::$variant,)*];

        impl Reason {
            /// The name as it appears on the wire and in CLI output, e.g. `HASH_MISMATCH`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name,)*
                }
            }

            /// The wire enum value (`gavel.v1.Reason`).
            pub fn to_proto(self) -> i32 {
                match self {
                    $(Reason::$variant => crate::proto::v1::Reason::$variant as i32,)*
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
}

impl Reason {
    /// The gRPC status code a refusal for this reason carries. This and
    /// [`Reason::http_status`] are the one place mapping reasons to codes.
    pub fn grpc_code(self) -> tonic::Code {
        use Reason::*;
        use tonic::Code;
        match self {
            NotFound => Code::NotFound,
            InvalidArgument | ReasonRequired | PolicyInvalid => Code::InvalidArgument,
            Unauthenticated => Code::Unauthenticated,
            PermissionDenied | NotEligible | SelfApproval | ChannelNotAllowed | NotRequester
            | SelfAcknowledge => Code::PermissionDenied,
            AlreadyExists => Code::AlreadyExists,
            Unavailable => Code::Unavailable,
            Internal => Code::Internal,
            HashMismatch | SnapshotMismatch | SnapshotRevoked | SnapshotStale | Denied
            | Pending | Rejected | Expired | Cancelled | AlreadyBound | AlreadyApproved
            | NotPending | StaleReview | NotOverridable | NotBound | BindIdMismatch
            | GateUnsatisfiable => Code::FailedPrecondition,
        }
    }

    /// The HTTP status a refusal for this reason carries.
    pub fn http_status(self) -> u16 {
        match self.grpc_code() {
            tonic::Code::NotFound => 404,
            tonic::Code::InvalidArgument => 400,
            tonic::Code::Unauthenticated => 401,
            tonic::Code::PermissionDenied => 403,
            tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => 409,
            tonic::Code::Unavailable => 503,
            _ => 500,
        }
    }

    /// The reason a wire value names, when it names one.
    pub fn from_proto(v: i32) -> Option<Reason> {
        ALL.iter().copied().find(|r| r.to_proto() == v)
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
    fn every_reason_round_trips_through_the_wire_enum() {
        for &r in ALL {
            assert_eq!(Reason::from_proto(r.to_proto()), Some(r));
            let proto = crate::proto::v1::Reason::try_from(r.to_proto()).unwrap();
            assert_eq!(proto.as_str_name(), format!("REASON_{}", r.as_str()));
        }
        assert_eq!(Reason::from_proto(0), None);
    }
}
