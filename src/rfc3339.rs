//! An instant as RFC 3339 text in UTC, exactly as the `time` crate writes it (`…:SS`, then the
//! fraction without its trailing zeros, none for a whole second, then `Z`), for the texts written
//! on every request: the request log's timestamp and an event's `time`. Formatting the whole
//! instant with `time` cost about 700 instructions; the date and time of day change once a
//! second, so `time` formats them then (cached per thread) and the fraction is written here.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Enough for every instant the `time` crate writes: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` is 30.
pub type Buffer = [u8; 40];

thread_local! {
    /// The last second this thread wrote, and its text up to the seconds.
    static SECOND: Cell<Option<(u64, [u8; 19])>> = const { Cell::new(None) };
}

/// `at` into `buffer`; the number of bytes written (0 for an instant the `time` crate cannot
/// hold: before -9999 or after 9999).
pub fn write(at: SystemTime, buffer: &mut Buffer) -> usize {
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) => SECOND.with(|second| {
            let mut cached = second.get();
            let written = write_since_epoch(buffer, since, &mut cached);
            second.set(cached);
            written
        }),
        // A clock before 1970: written whole by the time crate.
        Err(before) => time::Duration::try_from(before.duration())
            .ok()
            .and_then(|before| OffsetDateTime::UNIX_EPOCH.checked_sub(before))
            .map_or(0, |at| time_crate(at, &mut buffer[..])),
    }
}

/// `at` as a `String` (empty where [`write`] writes nothing).
pub fn string(at: SystemTime) -> String {
    let mut buffer = [0u8; 40];
    let written = write(at, &mut buffer);
    std::str::from_utf8(&buffer[..written])
        .unwrap_or_default()
        .to_owned()
}

/// `since` (after the Unix epoch), with `cached` the last second written and its text.
fn write_since_epoch(
    buffer: &mut Buffer,
    since: Duration,
    cached: &mut Option<(u64, [u8; 19])>,
) -> usize {
    let seconds = since.as_secs();
    let prefix = match *cached {
        Some((second, prefix)) if second == seconds => prefix,
        _ => {
            let mut whole = [0u8; 40];
            let written = i64::try_from(seconds)
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .map_or(0, |at| time_crate(at, &mut whole));
            // `YYYY-MM-DDTHH:MM:SSZ`: four-digit years, which is every year this can hold.
            if written != 20 {
                return 0;
            }
            let mut prefix = [0u8; 19];
            prefix.copy_from_slice(&whole[..19]);
            *cached = Some((seconds, prefix));
            prefix
        }
    };
    buffer[..19].copy_from_slice(&prefix);
    let mut at = 19;
    let mut nanos = since.subsec_nanos();
    if nanos > 0 {
        buffer[at] = b'.';
        let mut digits = 9;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            digits -= 1;
        }
        for i in (0..digits).rev() {
            buffer[at + 1 + i] = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        at += 1 + digits;
    }
    buffer[at] = b'Z';
    at + 1
}

/// `at` as the `time` crate writes RFC 3339, into `out`; the number of bytes written (0 if it
/// could not be written).
fn time_crate(at: OffsetDateTime, out: &mut [u8]) -> usize {
    let mut cursor = std::io::Cursor::new(out);
    // The count format_into returns falls short for RFC 3339 (time 0.3): the cursor's is right.
    match at.format_into(&mut cursor, &Rfc3339) {
        Ok(_) => usize::try_from(cursor.position()).unwrap_or(0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(at: SystemTime) -> String {
        OffsetDateTime::from(at).format(&Rfc3339).unwrap()
    }

    #[test]
    fn the_text_is_the_time_crates_within_and_across_seconds() {
        let mut cached = None;
        let mut seconds = 1_796_000_000u64;
        for nanos in [
            0,
            1,
            10,
            120_000_000,
            123_456_789,
            999_999_999,
            500,
            100_000,
            7,
        ] {
            // Within one second (the cached date and time) and across seconds.
            for step in [0, 0, 1, 86_399, 31_536_000] {
                seconds += step;
                let since = Duration::new(seconds, nanos);
                let mut buffer = [0u8; 40];
                let written = write_since_epoch(&mut buffer, since, &mut cached);
                assert_eq!(
                    std::str::from_utf8(&buffer[..written]).unwrap(),
                    reference(UNIX_EPOCH + since)
                );
                // The same through the thread's own cache.
                assert_eq!(string(UNIX_EPOCH + since), reference(UNIX_EPOCH + since));
            }
        }
    }

    #[test]
    fn instants_outside_the_cache_and_the_time_crate_never_panic() {
        for (secs, nanos) in [(0, 0), (253_402_300_799, 999)] {
            let at = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(string(at), reference(at));
        }
        assert_eq!(
            string(UNIX_EPOCH + Duration::new(1_796_000_000, 120_000_000)),
            "2026-11-30T00:53:20.12Z"
        );
        let before = UNIX_EPOCH - Duration::from_secs(86_400 * 400);
        assert_eq!(string(before), "1968-11-27T00:00:00Z");
        assert_eq!(
            string(UNIX_EPOCH - Duration::new(86_400, 250_000_000)),
            "1969-12-30T23:59:59.75Z"
        );
        // `OffsetDateTime::from` panics on these.
        assert_eq!(
            string(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            ""
        );
        assert_eq!(string(UNIX_EPOCH - Duration::from_secs(u64::MAX / 4)), "");
    }

    #[test]
    fn now_is_rfc3339_in_utc() {
        let text = string(SystemTime::now());
        assert!(text.ends_with('Z'), "{text}");
        assert!(OffsetDateTime::parse(&text, &Rfc3339).is_ok(), "{text}");
    }
}
