//! Request paths the gateway refuses to route, because an upstream could read them differently
//! from the prefix checks here (`/public/../api/payments` must not dodge the auth prefix `/api`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request path is not in normal form")]
pub struct UnsafePath;

/// Accepts an absolute path with no dot segments, no empty segments, no backslash and no
/// percent-encoded `.`, `/`, `\` or NUL. The query is not part of `path`.
pub fn check_path(path: &str) -> Result<(), UnsafePath> {
    let rest = path.strip_prefix('/').ok_or(UnsafePath)?;
    if rest.is_empty() {
        return Ok(());
    }
    if path.contains('\\') || has_encoded_separator(path.as_bytes()) {
        return Err(UnsafePath);
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(UnsafePath);
        }
    }
    Ok(())
}

fn has_encoded_separator(path: &[u8]) -> bool {
    path.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1].to_ascii_lowercase(), w[2].to_ascii_lowercase()),
                (b'2', b'e') | (b'2', b'f') | (b'5', b'c') | (b'0', b'0')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_pass() {
        for ok in [
            "/",
            "/api/fx/quote",
            "/api/fx/",
            "/a-b_c~d/x.json",
            "/api/%20space",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for bad in [
            "",
            "api/fx",
            "/public/../api/payments",
            "/api/./fx",
            "/api/..",
            "//api/payments",
            "/api//payments",
            "/public/%2e%2e/api",
            "/public/%2E./api",
            "/api%2fpayments",
            "/api\\payments",
            "/api/%00",
        ] {
            assert_eq!(check_path(bad), Err(UnsafePath), "{bad}");
        }
    }
}
