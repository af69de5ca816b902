//! Civil (calendar) time from Unix time, without a time-zone database.
//!
//! Pure functions: the station keeps UTC on its clock and the configured fixed UTC offset is applied
//! only for display (GUANO `Timestamp`) and for daily schedule windows.

/// A calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
#[must_use]
pub fn date_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01.
#[must_use]
pub fn days_from_date(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil time of `unix_ms` shifted by `offset_minutes`.
#[must_use]
pub fn civil(unix_ms: i64, offset_minutes: i32) -> Civil {
    let local_ms = unix_ms + i64::from(offset_minutes) * 60_000;
    let days = local_ms.div_euclid(86_400_000);
    let ms_of_day = local_ms.rem_euclid(86_400_000);
    let (year, month, day) = date_from_days(days);
    let secs = ms_of_day / 1000;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: ((secs / 60) % 60) as u32,
        second: (secs % 60) as u32,
        millis: (ms_of_day % 1000) as u32,
    }
}

/// `20261122T185300.123Z`: UTC, sortable, safe in file names.
#[must_use]
pub fn compact_utc(unix_ms: i64) -> String {
    let c = civil(unix_ms, 0);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// ISO 8601 with milliseconds and an explicit UTC offset: `2026-11-22T19:53:00.123+01:00`.
#[must_use]
pub fn iso_with_offset(unix_ms: i64, offset_minutes: i32) -> String {
    let c = civil(unix_ms, offset_minutes);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let off = offset_minutes.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{}{:02}:{:02}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.millis,
        sign,
        off / 60,
        off % 60
    )
}

/// Parses `+HH:MM` / `-HH:MM` (also `Z`) into minutes east of UTC.
#[must_use]
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    if s == "Z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    Some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_over_four_centuries() {
        for days in (-200_000..200_000).step_by(97) {
            let (y, m, d) = date_from_days(days);
            assert_eq!(days_from_date(y, m, d), days);
        }
    }

    #[test]
    fn known_instants_format_as_expected() {
        // 2026-11-22T18:53:00.123Z
        let t = 1_795_373_580_123;
        assert_eq!(compact_utc(t), "20261122T185300.123Z");
        assert_eq!(iso_with_offset(t, 60), "2026-11-22T19:53:00.123+01:00");
        assert_eq!(iso_with_offset(t, -330), "2026-11-22T13:23:00.123-05:30");
        assert_eq!(compact_utc(0), "19700101T000000.000Z");
    }

    #[test]
    fn offsets_parse_only_in_the_documented_form() {
        assert_eq!(parse_utc_offset("+01:00"), Some(60));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        assert_eq!(parse_utc_offset("0100"), None);
        assert_eq!(parse_utc_offset("+1:00"), None);
        assert_eq!(parse_utc_offset("+15:00"), None);
    }
}
