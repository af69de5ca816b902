//! Recording schedules, pure: always, daily windows in local time, and dawn/dusk windows computed
//! locally from latitude/longitude (the NOAA sunrise equation; accurate to a minute or two, which is
//! what a recording window needs). No network, no time-zone database: a fixed UTC offset.

use std::f64::consts::PI;

use crate::civil;

/// A solar event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolarEvent {
    Sunrise,
    Sunset,
    /// Sun 6 degrees below the horizon, morning.
    CivilDawn,
    /// Sun 6 degrees below the horizon, evening.
    CivilDusk,
}

impl SolarEvent {
    fn is_morning(self) -> bool {
        matches!(self, Self::Sunrise | Self::CivilDawn)
    }
    fn altitude_deg(self) -> f64 {
        match self {
            Self::Sunrise | Self::Sunset => -0.833,
            Self::CivilDawn | Self::CivilDusk => -6.0,
        }
    }
}

/// A window `[start, end)` in minutes of the local day; `end < start` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    pub start_min: u32,
    pub end_min: u32,
}

/// When a device records.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Always,
    Daily(Vec<DailyWindow>),
    /// From `start` (+ offset) to the next `end` (+ offset), every day.
    Solar {
        lat: f64,
        lon: f64,
        start: SolarEvent,
        start_offset_min: i32,
        end: SolarEvent,
        end_offset_min: i32,
    },
}

/// Whether to record at `wall_unix_s`. Without a trusted wall clock the answer is "record": a
/// station that does not know the time records rather than miss what it is there for.
#[must_use]
pub fn is_active(schedule: &Schedule, wall_unix_s: Option<i64>, utc_offset_min: i32) -> bool {
    let Some(now) = wall_unix_s else { return true };
    match schedule {
        Schedule::Always => true,
        Schedule::Daily(windows) => {
            let local = now + i64::from(utc_offset_min) * 60;
            let minute = (local.rem_euclid(86_400) / 60) as u32;
            windows.iter().any(|w| {
                if w.start_min == w.end_min {
                    true // 00:00-24:00
                } else if w.start_min < w.end_min {
                    (w.start_min..w.end_min).contains(&minute)
                } else {
                    minute >= w.start_min || minute < w.end_min
                }
            })
        }
        Schedule::Solar {
            lat,
            lon,
            start,
            start_offset_min,
            end,
            end_offset_min,
        } => {
            let local_day = (now + i64::from(utc_offset_min) * 60).div_euclid(86_400);
            // A window that opens on day D may close on D+1 (dusk to dawn): check D-1 and D.
            [local_day - 1, local_day].iter().any(|&d| {
                solar_window(
                    *lat,
                    *lon,
                    d,
                    *start,
                    *start_offset_min,
                    *end,
                    *end_offset_min,
                )
                .is_some_and(|(a, b)| (a..b).contains(&now))
            })
        }
    }
}

/// The window opening on civil day `day` (days since 1970-01-01), Unix seconds.
fn solar_window(
    lat: f64,
    lon: f64,
    day: i64,
    start: SolarEvent,
    start_off: i32,
    end: SolarEvent,
    end_off: i32,
) -> Option<(i64, i64)> {
    let a = solar_event(lat, lon, day, start)? + i64::from(start_off) * 60;
    let mut b = solar_event(lat, lon, day, end)? + i64::from(end_off) * 60;
    if b <= a {
        b = solar_event(lat, lon, day + 1, end)? + i64::from(end_off) * 60;
    }
    (b > a).then_some((a, b))
}

/// Unix seconds of `event` on the civil day `day` at (lat, lon), or `None` when the sun does not
/// cross that altitude that day (polar day or night).
#[must_use]
pub fn solar_event(lat: f64, lon: f64, day: i64, event: SolarEvent) -> Option<i64> {
    let rad = PI / 180.0;
    // Days since J2000.0 at local mean solar noon of that date.
    let j_star = (day as f64) + 0.5 - 10_957.0 - lon / 360.0 + 0.0008 - 0.5;
    let m = (357.5291 + 0.985_600_28 * j_star).rem_euclid(360.0);
    let c =
        1.9148 * (m * rad).sin() + 0.02 * (2.0 * m * rad).sin() + 0.0003 * (3.0 * m * rad).sin();
    let lambda = (m + c + 180.0 + 102.9372).rem_euclid(360.0);
    let j_transit = j_star + 0.0053 * (m * rad).sin() - 0.0069 * (2.0 * lambda * rad).sin();
    let sin_d = (lambda * rad).sin() * (23.4397 * rad).sin();
    let cos_d = sin_d.asin().cos();
    let cos_w = ((event.altitude_deg() * rad).sin() - (lat * rad).sin() * sin_d)
        / ((lat * rad).cos() * cos_d);
    if !(-1.0..=1.0).contains(&cos_w) {
        return None;
    }
    let w = cos_w.acos() / rad / 360.0;
    let j = if event.is_morning() {
        j_transit - w
    } else {
        j_transit + w
    };
    // j counts days since J2000.0 (2000-01-01T12:00Z = Unix 946_728_000).
    Some(946_728_000 + (j * 86_400.0).round() as i64)
}

/// Parses `HH:MM-HH:MM`.
#[must_use]
pub fn parse_window(s: &str) -> Option<DailyWindow> {
    let (a, b) = s.split_once('-')?;
    let hm = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    let w = DailyWindow {
        start_min: hm(a)?,
        end_min: hm(b)? % 1440,
    };
    (w.start_min != w.end_min || a.trim() != b.trim()).then_some(w)
}

/// Day number of a civil date (for tests and docs).
#[must_use]
pub fn day_of(year: i64, month: u32, day: u32) -> i64 {
    civil::days_from_date(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(unix: i64) -> (u32, u32) {
        let c = civil::civil(unix * 1000, 0);
        (c.hour, c.minute)
    }

    fn close(got: i64, want_h: u32, want_m: u32, tol_min: i64) {
        let (h, m) = hm(got);
        let diff = (i64::from(h * 60 + m) - i64::from(want_h * 60 + want_m)).abs();
        assert!(
            diff <= tol_min,
            "got {h:02}:{m:02}, want {want_h:02}:{want_m:02}"
        );
    }

    #[test]
    fn sunrise_and_sunset_match_published_tables_within_two_minutes() {
        // London, 2024-06-21: sunrise 03:43 UTC, sunset 20:21 UTC.
        let d = day_of(2024, 6, 21);
        close(
            solar_event(51.5074, -0.1278, d, SolarEvent::Sunrise).expect("rises"),
            3,
            43,
            2,
        );
        close(
            solar_event(51.5074, -0.1278, d, SolarEvent::Sunset).expect("sets"),
            20,
            21,
            2,
        );
        // Sydney, 2024-12-21: sunrise 18:41 UTC (05:41 AEDT), sunset 09:05 UTC (20:05 AEDT).
        let d = day_of(2024, 12, 21);
        close(
            solar_event(-33.8688, 151.2093, d, SolarEvent::Sunrise).expect("rises"),
            18,
            41,
            2,
        );
        close(
            solar_event(-33.8688, 151.2093, d, SolarEvent::Sunset).expect("sets"),
            9,
            5,
            2,
        );
        // Tromsø in June: the sun never sets.
        assert!(solar_event(69.65, 18.96, day_of(2024, 6, 21), SolarEvent::Sunset).is_none());
    }

    #[test]
    fn daily_windows_cross_midnight_in_local_time() {
        let s = Schedule::Daily(vec![parse_window("20:00-06:00").expect("valid")]);
        let at = |h: i64, m: i64| day_of(2026, 11, 22) * 86_400 + h * 3600 + m * 60;
        // Local = UTC+1: 19:30 UTC is 20:30 local.
        assert!(is_active(&s, Some(at(19, 30)), 60));
        assert!(!is_active(&s, Some(at(18, 30)), 60));
        assert!(is_active(&s, Some(at(4, 59)), 60));
        assert!(!is_active(&s, Some(at(5, 0)), 60));
        assert!(is_active(&s, None, 60), "untrusted time records");
    }

    #[test]
    fn a_dusk_to_dawn_window_spans_the_night_with_offsets() {
        let s = Schedule::Solar {
            lat: 51.5074,
            lon: -0.1278,
            start: SolarEvent::Sunset,
            start_offset_min: -30,
            end: SolarEvent::Sunrise,
            end_offset_min: 30,
        };
        let d = day_of(2024, 6, 21) * 86_400;
        let at = |h: i64, m: i64| Some(d + h * 3600 + m * 60);
        assert!(!is_active(&s, at(12, 0), 0));
        assert!(!is_active(&s, at(19, 45), 0));
        assert!(is_active(&s, at(19, 55), 0)); // sunset 20:21 - 30 min
        assert!(is_active(&s, at(23, 59), 0));
        assert!(is_active(&s, at(2, 0), 0)); // the window that opened the evening before
        assert!(is_active(&s, at(4, 10), 0)); // sunrise 03:43 + 30 min
        assert!(!is_active(&s, at(4, 20), 0));
    }

    #[test]
    fn window_syntax_is_checked() {
        assert_eq!(
            parse_window("05:30-24:00"),
            Some(DailyWindow {
                start_min: 330,
                end_min: 0
            })
        );
        assert_eq!(parse_window("5-6"), None);
        assert_eq!(parse_window("25:00-06:00"), None);
        assert_eq!(parse_window("06:00-06:00"), None);
    }
}
