//! Calendar windows of spend caps, in UTC. The window a request falls in is
//! computed from its own time, so a new window starts by itself at the
//! boundary: there is no reset job that could be missed.

use chrono::{Datelike, Duration, TimeZone, Utc};
use qlaud_api::Period;

/// The start (Unix ms) of the window of `period` that contains `now_ms`;
/// `total` has one window, starting at 0.
pub fn window_start(period: Period, now_ms: i64) -> i64 {
    let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_default();
    let day = now.date_naive();
    let start = match period {
        Period::Total => return 0,
        Period::Daily => day,
        Period::Weekly => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        Period::Monthly => day.with_day(1).expect("every month has a first day"),
    };
    start.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis()
}

/// When the window starting at `start_ms` ends; `total` never does.
pub fn window_end(period: Period, start_ms: i64) -> Option<i64> {
    const DAY: i64 = 86_400_000;
    match period {
        Period::Total => None,
        Period::Daily => Some(start_ms + DAY),
        Period::Weekly => Some(start_ms + 7 * DAY),
        // Past the longest month, then back to its first day.
        Period::Monthly => Some(window_start(period, start_ms + 32 * DAY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn windows_follow_utc_calendar_boundaries() {
        let t = ms("2026-11-26T23:59:59.999Z"); // a Thursday
        assert_eq!(window_start(Period::Daily, t), ms("2026-11-26T00:00:00Z"));
        assert_eq!(window_start(Period::Weekly, t), ms("2026-11-23T00:00:00Z"));
        assert_eq!(window_start(Period::Monthly, t), ms("2026-11-01T00:00:00Z"));
        assert_eq!(window_start(Period::Total, t), 0);
        let next = t + 1;
        assert_eq!(window_start(Period::Daily, next), ms("2026-11-27T00:00:00Z"));
        assert_eq!(
            window_start(Period::Monthly, ms("2026-12-01T00:00:00Z")),
            ms("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            window_start(Period::Weekly, ms("2026-11-30T00:00:00Z")),
            ms("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            window_start(Period::Monthly, ms("2028-02-29T12:00:00Z")),
            ms("2028-02-01T00:00:00Z")
        );
    }
}
