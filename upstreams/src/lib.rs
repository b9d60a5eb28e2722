//! Provider pools for payedge: which provider serves a request.
//!
//! A [`Pool`] holds the providers of one kind of connector (cards, FX…) and picks one per attempt
//! with [`Pool::select`]. The pick is a smooth weighted round robin over a precomputed schedule, so
//! it is deterministic, lock-free and never sends long bursts to one provider. A request that
//! already tried a provider passes it in [`Selection::tried`] and gets the next one.

mod pool;
mod schedule;

pub use pool::{
    MAX_PROVIDERS, MAX_WEIGHT, Pool, PoolError, Provider, ProviderSpec, SelectError, Selection,
    TriedSet,
};
pub use schedule::Schedule;
