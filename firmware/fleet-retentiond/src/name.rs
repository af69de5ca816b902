//! Recording file names, parsed tolerantly.
//!
//! The format assumed (written by `fleet-recorderd`, see `docs/reference/retentiond.md`) is
//! underscore-separated tokens ending in `.wav`:
//!
//! ```text
//! <YYYYMMDD>T<HHMMSS>[.fff](Z|±HHMM)_<station>_<device>_<seq>.wav
//! 20261122T185300.123Z_st-1_mic-0_00000009.wav
//! ```
//!
//! This is what `fleet_recorderd::segment::segment_name` writes: UTC time of the first frame
//! (from the capture clock, trusted or not), station and device ids with everything but
//! `[A-Za-z0-9-]` replaced by `-`, and the per-device segment sequence in eight digits.
//!
//! The parser does not insist on that order: it takes the first token that looks like a
//! timestamp as the start, the last all-digit token (optionally prefixed `s`, `seq` or `n`) as the
//! segment sequence, and the remaining tokens, in order, as station then device (the device is the
//! last remaining token; the station is everything before it, joined with `_`). Anything not
//! recognised is tolerated: a name without a sequence still parses, with `sequence: None`, and the
//! index then takes the sequence from GUANO. Names starting with `.` and names not ending in
//! `.wav` (any case) are not recordings.

/// What a recording's file name tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameInfo {
    pub station: Option<String>,
    pub device: Option<String>,
    /// Unix milliseconds of the first sample, as the name states it (trusted or not).
    pub start_unix_ms: Option<i64>,
    pub sequence: Option<u64>,
}

/// Whether a file name is a recording (`*.wav`, not hidden, not a temp file).
#[must_use]
pub fn is_recording(name: &str) -> bool {
    !name.starts_with('.')
        && name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|ext| ext.eq_ignore_ascii_case(".wav"))
}

/// Parses a recording's file name; `None` when it is not a recording name at all.
#[must_use]
pub fn parse(name: &str) -> Option<NameInfo> {
    if !is_recording(name) {
        return None;
    }
    let stem = &name[..name.len() - 4];
    let tokens: Vec<&str> = stem.split('_').filter(|t| !t.is_empty()).collect();
    let mut info = NameInfo::default();
    let time_at = tokens.iter().position(|t| parse_timestamp(t).is_some());
    if let Some(i) = time_at {
        info.start_unix_ms = parse_timestamp(tokens[i]);
    }
    let seq_at = tokens
        .iter()
        .enumerate()
        .rev()
        .find(|(i, t)| Some(*i) != time_at && parse_sequence(t).is_some())
        .map(|(i, _)| i);
    if let Some(i) = seq_at {
        info.sequence = parse_sequence(tokens[i]);
    }
    let rest: Vec<&str> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != time_at && Some(*i) != seq_at)
        .map(|(_, t)| *t)
        .collect();
    match rest.as_slice() {
        [] => {}
        [only] => info.station = Some((*only).to_owned()),
        [station @ .., device] => {
            info.station = Some(station.join("_"));
            info.device = Some((*device).to_owned());
        }
    }
    Some(info)
}

fn parse_sequence(token: &str) -> Option<u64> {
    let digits = token
        .strip_prefix("seq")
        .or_else(|| token.strip_prefix('s'))
        .or_else(|| token.strip_prefix('n'))
        .unwrap_or(token);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `YYYYMMDDTHHMMSS[.fff](Z|±HHMM)?` (also `-` between date and time) to Unix milliseconds.
/// Without a zone the time is taken as UTC.
#[must_use]
pub fn parse_timestamp(token: &str) -> Option<i64> {
    let b = token.as_bytes();
    if b.len() < 15 || !(b[8] == b'T' || b[8] == b't' || b[8] == b'-') {
        return None;
    }
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let (year, month, day) = (num(&b[0..4])?, num(&b[4..6])?, num(&b[6..8])?);
    let (hour, min, sec) = (num(&b[9..11])?, num(&b[11..13])?, num(&b[13..15])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[15..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(3)];
        millis = num(digits)? * 10i64.pow(3 - u32::try_from(digits.len()).ok()?);
        rest = &frac[n..];
    }
    let offset_min = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let v = num(&[*h1, *h2])? * 60 + num(&[*m1, *m2])?;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + min * 60 + sec) - offset_min * 60) * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_format_parses_into_every_field() {
        let i = parse("20261122T185300.250Z_st-1_mic0_000123.wav").expect("a recording");
        assert_eq!(i.station.as_deref(), Some("st-1"));
        assert_eq!(i.device.as_deref(), Some("mic0"));
        assert_eq!(i.sequence, Some(123));
        assert_eq!(i.start_unix_ms, Some(1_795_373_580_250));
    }

    #[test]
    fn the_name_fleet_recorderd_writes_parses() {
        let i = parse("20261122T185300.123Z_st-1_mic-0_00000009.wav").expect("a recording");
        assert_eq!(i.station.as_deref(), Some("st-1"));
        assert_eq!(i.device.as_deref(), Some("mic-0"));
        assert_eq!(i.sequence, Some(9));
        assert_eq!(i.start_unix_ms, Some(1_795_373_580_123));
    }

    #[test]
    fn other_orders_prefixes_and_offsets_are_tolerated() {
        let i = parse("my_station_mic-2_20261122-195300+0100_s42.WAV").expect("a recording");
        assert_eq!(i.station.as_deref(), Some("my_station"));
        assert_eq!(i.device.as_deref(), Some("mic-2"));
        assert_eq!(i.sequence, Some(42));
        assert_eq!(i.start_unix_ms, Some(1_795_373_580_000));
        let bare = parse("recording.wav").expect("a recording");
        assert_eq!(bare.sequence, None);
        assert_eq!(bare.station.as_deref(), Some("recording"));
    }

    #[test]
    fn hidden_temporary_and_foreign_files_are_not_recordings() {
        for name in [
            ".20261122T185300Z_st_mic_1.wav",
            "x.wav.part",
            "notes.txt",
            ".wav",
            "wav",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }

    #[test]
    fn malformed_timestamps_are_ignored_not_fatal() {
        let i = parse("20261399T185300Z_st_mic_7.wav").expect("a recording");
        assert_eq!(i.start_unix_ms, None);
        assert_eq!(i.sequence, Some(7));
    }
}
