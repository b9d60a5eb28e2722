//! Which client-sent `X-Request-Id` values the gateway keeps (others are replaced by a new id).

pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Returns the id when it is 1–128 characters of `A-Z a-z 0-9 - _ . :` (safe in logs and headers).
pub fn accept_client_request_id(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    // The bytes were just checked to be ASCII, so this cannot fail.
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_safe_ids_and_drops_the_rest() {
        assert_eq!(accept_client_request_id(b"abc-123"), Some("abc-123"));
        assert_eq!(
            accept_client_request_id(b"0190c5d2-7f1e-7abc-8def-0123456789ab"),
            Some("0190c5d2-7f1e-7abc-8def-0123456789ab")
        );
        assert_eq!(accept_client_request_id(b""), None);
        assert_eq!(accept_client_request_id(b"has space"), None);
        assert_eq!(accept_client_request_id(b"quote\"inject"), None);
        assert_eq!(accept_client_request_id(b"new\nline"), None);
        assert_eq!(accept_client_request_id(&[b'a'; 129]), None);
        assert_eq!(
            accept_client_request_id(&[b'a'; 128]).map(str::len),
            Some(128)
        );
    }
}
