//! The doors: thin layers that authenticate, translate and call the engine.

pub mod convert;
pub mod grpc;
pub mod http;
pub mod limit;
pub mod observe;
pub mod status;
