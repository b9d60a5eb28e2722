//! The body of `POST /admin/alerts`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::failure::Failure;

const MAX_MESSAGE: usize = 1_000;
const MAX_CODE: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// A stable code: 1-64 of a-z, 0-9, '_'.
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Map<String, Value>,
}

pub fn parse(body: &[u8]) -> Result<Alert, Failure> {
    let alert: Alert = serde_json::from_slice(body).map_err(|_| Failure::BadRequest)?;
    let code_ok = !alert.code.is_empty()
        && alert.code.len() <= MAX_CODE
        && alert
            .code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok || alert.message.trim().is_empty() || alert.message.len() > MAX_MESSAGE {
        return Err(Failure::BadRequest);
    }
    Ok(alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_well_formed_alert_and_refuses_the_rest() {
        let a = parse(br#"{"code":"maintenance","message":"cards down 02:00-02:30","details":{"pool":"cards"}}"#).unwrap();
        assert_eq!(a.code, "maintenance");
        assert_eq!(a.details["pool"], "cards");
        for bad in [
            &br#"{"code":"Maintenance","message":"x"}"#[..],
            br#"{"code":"m","message":"  "}"#,
            br#"{"code":"m"}"#,
            br#"{"code":"m","message":"x","extra":1}"#,
            b"not json",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
