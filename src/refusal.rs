//! Why a request was refused: a machine-readable reason (the `Reason` enum of
//! the wire contract), the field at fault when there is one, and a message
//! for people. Every door reports refusals with these. Pure.

use std::fmt;

/// Every refusal reason; names match `gavel.v1.Reason` without its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    // Bind, in the order the checks run.
    NotFound,
    HashMismatch,
    SnapshotMismatch,
    SnapshotRevoked,
    SnapshotStale,
    Denied,
    Pending,
    Rejected,
    Expired,
    Cancelled,
    AlreadyBound,
    // Request shape and identity.
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    AlreadyExists,
    Unavailable,
    Internal,
    // Approvals.
    NotEligible,
    SelfApproval,
    AlreadyApproved,
    ReasonRequired,
    NotPending,
    ChannelNotAllowed,
    StaleReview,
    NotOverridable,
    NotRequester,
    SelfAcknowledge,
    NotBound,
    BindIdMismatch,
    // Policy.
    PolicyInvalid,
    GateUnsatisfiable,
}

impl Reason {
    /// The name as it appears on the wire and in CLI output, e.g. `HASH_MISMATCH`.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
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
    }

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

    /// The wire enum value (`gavel.v1.Reason`).
    pub fn to_proto(self) -> i32 {
        use crate::proto::v1::Reason as P;
        use Reason::*;
        (match self {
            NotFound => P::NotFound,
            HashMismatch => P::HashMismatch,
            SnapshotMismatch => P::SnapshotMismatch,
            SnapshotRevoked => P::SnapshotRevoked,
            SnapshotStale => P::SnapshotStale,
            Denied => P::Denied,
            Pending => P::Pending,
            Rejected => P::Rejected,
            Expired => P::Expired,
            Cancelled => P::Cancelled,
            AlreadyBound => P::AlreadyBound,
            InvalidArgument => P::InvalidArgument,
            Unauthenticated => P::Unauthenticated,
            PermissionDenied => P::PermissionDenied,
            AlreadyExists => P::AlreadyExists,
            Unavailable => P::Unavailable,
            Internal => P::Internal,
            NotEligible => P::NotEligible,
            SelfApproval => P::SelfApproval,
            AlreadyApproved => P::AlreadyApproved,
            ReasonRequired => P::ReasonRequired,
            NotPending => P::NotPending,
            ChannelNotAllowed => P::ChannelNotAllowed,
            StaleReview => P::StaleReview,
            NotOverridable => P::NotOverridable,
            NotRequester => P::NotRequester,
            SelfAcknowledge => P::SelfAcknowledge,
            NotBound => P::NotBound,
            BindIdMismatch => P::BindIdMismatch,
            PolicyInvalid => P::PolicyInvalid,
            GateUnsatisfiable => P::GateUnsatisfiable,
        }) as i32
    }

    /// The reason a wire value names, when it names one.
    pub fn from_proto(v: i32) -> Option<Reason> {
        ALL.iter().copied().find(|r| r.to_proto() == v)
    }
}

const ALL: [Reason; 31] = {
    use Reason::*;
    [
        NotFound,
        HashMismatch,
        SnapshotMismatch,
        SnapshotRevoked,
        SnapshotStale,
        Denied,
        Pending,
        Rejected,
        Expired,
        Cancelled,
        AlreadyBound,
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        AlreadyExists,
        Unavailable,
        Internal,
        NotEligible,
        SelfApproval,
        AlreadyApproved,
        ReasonRequired,
        NotPending,
        ChannelNotAllowed,
        StaleReview,
        NotOverridable,
        NotRequester,
        SelfAcknowledge,
        NotBound,
        BindIdMismatch,
        PolicyInvalid,
        GateUnsatisfiable,
    ]
};

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
        for r in ALL {
            assert_eq!(Reason::from_proto(r.to_proto()), Some(r));
            let proto = crate::proto::v1::Reason::try_from(r.to_proto()).unwrap();
            assert_eq!(proto.as_str_name(), format!("REASON_{}", r.as_str()));
        }
        assert_eq!(Reason::from_proto(0), None);
    }
}
