//! Provider pools for payedge: which provider serves an attempt, and what the attempts teach.
//!
//! A [`Pool`] holds the providers of one kind of connector (cards, FX…). Per provider it tracks
//! health from active checks, ejection from passive outcomes, and success-rate and latency
//! averages; [`scoring`] turns those and the provider's cost into an effective weight, and
//! [`Pool::select`] picks by smooth weighted round robin among the providers that can take the
//! request. [`Pool::may_retry`] is the failover policy: another provider after a refused
//! connection always, after bytes were sent only for idempotent methods, within a retry budget.
//!
//! No sockets here: the binary runs the health checks and reports outcomes, with the clock
//! passed in, so everything is tested without a network.

mod budget;
mod health;
mod policy;
mod pool;
mod schedule;
pub mod scoring;
mod selector;

pub use budget::RetryBudget;
pub use health::{Admission, HealthSnapshot, Outcome, ProviderHealth, Transition};
pub use policy::{
    Cost, FailureKinds, HealthPolicy, OutlierPolicy, PoolPolicy, RetryPolicy, SelectionPolicy,
};
pub use pool::{
    MAX_PROVIDERS, MAX_WEIGHT, Pool, PoolError, Provider, ProviderSpec, ProviderStatus, RetryCause,
    RetryVerdict, SelectError, Selection, TriedSet, currency_code,
};
pub use schedule::Schedule;
pub use selector::Selector;
