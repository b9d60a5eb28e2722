//! Configuration: the YAML operators write (`external`), checked once at start (`validate`) into
//! what the gateway runs with (`runtime`).

mod external;
mod external_events;
mod external_pool;
mod issues;
mod lines;
mod runtime;
mod validate;
mod validate_events;
mod validate_pool;
mod validate_tls;

use std::path::Path;

pub use issues::{ConfigErrors, ConfigIssue};
pub use runtime::*;
pub use validate::{EnvLookup, validate_text};
pub use validate_tls::EXPIRY_WARNING;

/// Reads and validates `path`, taking secrets from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(path, None, "", format!("cannot read the file: {e}")))?;
    validate_text(path, &text, &|name| std::env::var(name).ok())
}
