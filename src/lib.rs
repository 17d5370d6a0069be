//! gavel: a policy decision point with approval binding for autonomous agents.
//!
//! The pure core (`policy`, `job`, `canonical`, `approval`, `audit`,
//! `refusal`) knows nothing of sockets, databases or files. `store` is the
//! only place with SQL; `engine` runs the core through the store and is
//! what every door calls; the doors in `service` (gRPC, and HTTP with the
//! approver page) and the command line in `cli` only authenticate and
//! translate; `notify` delivers the outbox.
//!
//! Everything outside the core is behind the `server` feature (on by
//! default), so the core builds without sockets, databases or files: the
//! fuzz targets in `fuzz/` build it alone.

pub mod approval;
pub mod audit;
#[cfg(feature = "server")]
pub mod bench;
pub mod canonical;
pub mod checkpoint;
#[cfg(feature = "server")]
pub mod cli;
pub mod clock;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod engine;
#[cfg(feature = "server")]
pub mod hook;
pub mod identity;
pub mod job;
#[cfg(feature = "server")]
pub mod mcp;
#[cfg(feature = "server")]
pub mod notify;
#[cfg(feature = "server")]
pub mod observe;
#[cfg(feature = "server")]
pub mod oidc;
pub mod policy;
pub mod receipt;
pub mod refusal;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
pub mod signature;
#[cfg(feature = "server")]
pub mod stats;
#[cfg(feature = "server")]
pub mod store;
pub mod tenant;
#[cfg(feature = "server")]
pub mod tls;
pub mod trace;
pub mod wire;

pub mod proto {
    //! The generated wire types and services of `proto/gavel/v1/gavel.proto`.
    #![allow(clippy::all, missing_docs)]
    //! The messages build without the `server` feature; the services
    //! (clients and servers) come with it.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/gavel.v1.rs"));

        /// The encoded file descriptor set, for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/gavel_descriptor.bin"));
    }

    /// `google.rpc.Status`, the rich error model carrying `ErrorDetail`.
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}
