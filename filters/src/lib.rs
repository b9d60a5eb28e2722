//! Request and response decisions for payedge, free of sockets and Pingora sessions.
//!
//! Every function here takes plain values (method, path, header bytes) and returns a decision, so it
//! is unit-tested and benchmarked without a network. The binary adapts these to Pingora's phases.

pub mod auth;
pub mod forwarded;
pub mod host;
pub mod idempotency;
pub mod json;
pub mod path;
pub mod proxy_protocol;
pub mod request_head;
pub mod request_id;
pub mod routing;
pub mod server_names;
pub mod tenant;
pub mod token_cache;
pub mod triggers;
