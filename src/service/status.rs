//! The one place refusal reasons become transport codes: a gRPC status
//! code and an HTTP status for each reason, and the wire enum value. Every
//! door takes its codes from here, so they cannot disagree.

use crate::proto::v1 as pb;
use crate::refusal::Reason;

/// The gRPC status code a refusal for this reason carries.
pub fn grpc_code(reason: Reason) -> tonic::Code {
    use Reason::*;
    use tonic::Code;
    match reason {
        NotFound => Code::NotFound,
        InvalidArgument | ReasonRequired | PolicyInvalid | UnknownTenant => Code::InvalidArgument,
        Unauthenticated => Code::Unauthenticated,
        PermissionDenied | NotEligible | SelfApproval | ChannelNotAllowed | NotRequester
        | SelfAcknowledge => Code::PermissionDenied,
        AlreadyExists => Code::AlreadyExists,
        Unavailable => Code::Unavailable,
        ResourceExhausted => Code::ResourceExhausted,
        Internal => Code::Internal,
        HashMismatch | SnapshotMismatch | SnapshotRevoked | SnapshotStale | Denied | Pending
        | Rejected | Expired | Cancelled | AlreadyBound | AlreadyApproved | NotPending
        | StaleReview | NotOverridable | NotBound | BindIdMismatch | GateUnsatisfiable
        | NoTenantPolicy => Code::FailedPrecondition,
    }
}

/// The HTTP status a refusal for this reason carries.
pub fn http_status(reason: Reason) -> u16 {
    match grpc_code(reason) {
        tonic::Code::NotFound => 404,
        tonic::Code::InvalidArgument => 400,
        tonic::Code::Unauthenticated => 401,
        tonic::Code::PermissionDenied => 403,
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition => 409,
        tonic::Code::Unavailable => 503,
        tonic::Code::ResourceExhausted => 429,
        _ => 500,
    }
}

/// The wire enum value (`gavel.v1.Reason`) of a reason.
pub fn reason_to_proto(reason: Reason) -> i32 {
    pb::Reason::from_str_name(&format!("REASON_{}", reason.as_str())).map_or(0, |r| r as i32)
}

/// The reason a wire enum value names, when it names one.
pub fn reason_from_proto(value: i32) -> Option<Reason> {
    let name = pb::Reason::try_from(value).ok()?.as_str_name();
    Reason::parse(name.strip_prefix("REASON_")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_the_wire_enum() {
        for &r in Reason::ALL {
            let v = reason_to_proto(r);
            assert_ne!(v, 0, "{r} has no wire value");
            assert_eq!(reason_from_proto(v), Some(r));
        }
        assert_eq!(reason_from_proto(0), None);
    }

    #[test]
    fn codes_agree_between_doors() {
        assert_eq!(
            grpc_code(Reason::HashMismatch),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(http_status(Reason::HashMismatch), 409);
        assert_eq!(http_status(Reason::Unauthenticated), 401);
        assert_eq!(http_status(Reason::Internal), 500);
    }
}
