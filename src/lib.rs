//! payedge: a multi-tenant payments edge proxy on Cloudflare Pingora.

pub mod admin;
pub mod allocator;
pub mod cli;
pub mod config;
pub mod connection_cap;
pub mod demo;
pub mod events;
pub mod failure;
pub mod head_deadline;
pub mod hub;
pub mod idempotency;
pub mod json;
pub mod jwks;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod rfc3339;
pub mod runtime;
pub mod server;
pub mod terminal;
pub mod tls;
pub mod watch;
