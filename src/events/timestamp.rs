//! An event's instant, read once: its CloudEvents `time` (RFC 3339, UTC, written by
//! [`crate::rfc3339`]) and its UUIDv7 id both come from the same clock reading, the id's random
//! bits from the fast generator as `Uuid::now_v7` would take them (without its process-wide
//! ordering context: event ids need to be unique, not ordered; the history orders events by its
//! own stream ids).

use std::time::{SystemTime, UNIX_EPOCH};

/// A UUIDv7 for `at`, hyphenated, lower case.
pub fn uuid_v7(at: SystemTime) -> String {
    let id = match at.duration_since(UNIX_EPOCH) {
        Ok(since) => uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            since.as_secs(),
            since.subsec_nanos(),
        )),
        Err(_) => uuid::Uuid::now_v7(),
    };
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_id_carries_the_same_millisecond_and_is_a_version_7_uuid() {
        let at = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
        let id = uuid::Uuid::parse_str(&uuid_v7(at)).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos), (1_796_000_000, 123_000_000));
        assert_ne!(uuid_v7(at), uuid_v7(at), "random bits differ");
    }
}
