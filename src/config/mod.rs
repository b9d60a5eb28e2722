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

/// The largest configuration file read. Real ones are a few KiB; a file far larger is a
/// mistake or an attack, refused before it is parsed (parsing 45 MB of YAML took 13 s and
/// 800 MB of memory).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads and validates `path` with `env`; also returns the sha256 of the bytes it read.
pub fn load_with(path: &Path, env: EnvLookup<'_>) -> Result<(Config, String), ConfigErrors> {
    let cannot_read = |e: std::io::Error| {
        ConfigErrors::single(path, None, "", format!("cannot read the file: {e}"))
    };
    let mut bytes = Vec::new();
    // Read at most one byte past the limit, whatever the file claims its size is (a pipe or a
    // file still growing has none worth believing).
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MAX_CONFIG_BYTES + 1),
                &mut bytes,
            )
        })
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::single(
            path,
            None,
            "",
            format!(
                "the file is larger than {} MiB: not a configuration payedge reads",
                MAX_CONFIG_BYTES / 1024 / 1024
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigErrors::single(path, None, "", "the file is not UTF-8 text"))?;
    let sha256 = crate::runtime::sha256_hex(text.as_bytes());
    Ok((validate_text(path, &text, env)?, sha256))
}
