//! Request paths the gateway refuses to route, because an upstream could read them differently
//! from the prefix checks here: `/public/../api/payments` or `/api/p%61yments` must not dodge an
//! auth prefix `/api/payments` that the provider would still serve.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request path is not in normal form")]
pub struct UnsafePath;

/// Accepts an absolute path in normal form: no dot segments, no empty segments, no backslash, no
/// `;` (path parameters, which some servers strip before routing), and no percent-encoding of a
/// character that is never encoded in normal form (RFC 3986 §6.2.2.2: the unreserved characters)
/// or of a separator (`/`, `\`, `;`, NUL). Other escapes (`%20`, `%C3%A9`) pass. The query is not
/// part of `path`.
pub fn check_path(path: &str) -> Result<(), UnsafePath> {
    let rest = path.strip_prefix('/').ok_or(UnsafePath)?;
    if rest.is_empty() {
        return Ok(());
    }
    if path.contains(['\\', ';']) || has_ambiguous_escape(path.as_bytes()) {
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

fn has_ambiguous_escape(path: &[u8]) -> bool {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    path.iter().enumerate().any(|(i, b)| {
        if *b != b'%' {
            return false;
        }
        match (hex(path.get(i + 1)), hex(path.get(i + 2))) {
            (Some(hi), Some(lo)) => {
                let decoded = (hi * 16 + lo) as u8;
                decoded.is_ascii_alphanumeric()
                    || matches!(decoded, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | 0)
            }
            // A `%` not followed by two hex digits is malformed.
            _ => true,
        }
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
            "/caf%C3%A9",
            "/q/%3F%23%25",
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
            "/api/p%61yments",
            "/api/%70ayments",
            "/api/payment%73",
            "/api/payments%7E",
            "/api/payments%3Bx",
            "/api/payments;jsessionid=1",
            "/api;x/payments",
            "/api/%zz",
            "/api/%4",
        ] {
            assert_eq!(check_path(bad), Err(UnsafePath), "{bad}");
        }
    }
}
