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
mod validate_idempotency;
mod validate_pool;
mod validate_tls;

use std::path::Path;

pub use issues::{ConfigErrors, ConfigIssue};
pub use runtime::*;
pub use validate::{EnvLookup, validate_text};
pub use validate_tls::EXPIRY_WARNING;

/// Reads and validates `path`, taking secrets from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with(path, &|name| std::env::var(name).ok()).map(|(config, _)| config)
}

/// Reads and validates `path` with `env`; also returns the sha256 of the bytes it read.
pub fn load_with(path: &Path, env: EnvLookup<'_>) -> Result<(Config, String), ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigErrors::single(path, None, "", format!("cannot read the file: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigErrors::single(path, None, "", "the file is not UTF-8 text"))?;
    let sha256 = crate::runtime::sha256_hex(text.as_bytes());
    Ok((validate_text(path, &text, env)?, sha256))
}
