//! gavel: a policy decision point with approval binding for autonomous agents.
//!
//! The pure core (`policy`, `job`, `canonical`, `approval`, `audit`,
//! `refusal`) knows nothing of sockets, databases or files. `store` is the
//! only place with SQL; `engine` runs the core through the store and is
//! what every door calls; the doors in `service` (gRPC, and HTTP with the
//! approver page) and the command line in `cli` only authenticate and
//! translate; `notify` delivers the outbox.

pub mod approval;
pub mod audit;
pub mod bench;
pub mod canonical;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod hook;
pub mod identity;
pub mod job;
pub mod mcp;
pub mod notify;
pub mod observe;
pub mod oidc;
pub mod policy;
pub mod receipt;
pub mod refusal;
pub mod server;
pub mod service;
pub mod stats;
pub mod store;
pub mod tenant;
pub mod tls;
pub mod trace;

pub mod proto {
    //! The generated wire types and services of `proto/gavel/v1/gavel.proto`.
    #![allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("gavel.v1");

        /// The encoded file descriptor set, for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("gavel_descriptor");
    }

    /// `google.rpc.Status`, the rich error model carrying `ErrorDetail`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
