//! An event's instant, read once: its CloudEvents `time` (RFC 3339, UTC) and its UUIDv7 id both
//! come from the same clock reading, the id's random bits from the fast generator as
//! `Uuid::now_v7` would take them (without its process-wide ordering context: event ids need
//! to be unique, not ordered; the history orders events by its own stream ids).

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` as RFC 3339 in UTC, as the `time` crate writes it; empty for an instant the `time` crate
/// cannot hold (before -9999 or after 9999), where converting would panic.
pub fn rfc3339(at: SystemTime) -> String {
    crate::rfc3339::string(at)
}

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
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn the_time_is_the_time_crates_rfc_3339_and_never_a_panic() {
        for (secs, nanos) in [(0, 0), (1_796_000_000, 123_456_789), (253_402_300_799, 999)] {
            let at = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(
                rfc3339(at),
                OffsetDateTime::from(at).format(&Rfc3339).unwrap()
            );
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(1_796_000_000, 120_000_000)),
            "2026-11-30T00:53:20.12Z"
        );
        let before = UNIX_EPOCH - Duration::from_secs(86_400 * 400);
        assert_eq!(rfc3339(before), "1968-11-27T00:00:00Z");
        // `OffsetDateTime::from` panics on these.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            ""
        );
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(u64::MAX / 4)), "");
    }

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
