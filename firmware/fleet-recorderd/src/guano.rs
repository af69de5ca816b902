//! GUANO metadata text (<https://github.com/riggsd/guano-spec>), the bioacoustics standard other tools
//! read. Pure: builds and edits the text; the `wav` module places it in the `guan` chunk.

use std::fmt::Write as _;

use crate::civil;

/// Why a segment was closed, recorded as `FLEET|Closed By`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// It reached its configured length.
    Length,
    /// The device overran (xrun): frames were lost after this segment.
    Xrun,
    /// The device stopped delivering frames within the wait timeout.
    Stall,
    /// The device disappeared (unplugged) or was suspended.
    DeviceLost,
    /// The capture clock jumped ahead of the samples (the process or the machine was frozen, a
    /// driver dropped frames without reporting an overrun).
    Discontinuity,
    /// The schedule window ended.
    Schedule,
    /// The daemon was stopped (SIGTERM) or reached its `--duration`.
    Shutdown,
    /// Left open by a crash or power cut and repaired on the next start.
    Recovery,
}

impl ClosedBy {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Xrun => "xrun",
            Self::Stall => "stall",
            Self::DeviceLost => "device-lost",
            Self::Discontinuity => "discontinuity",
            Self::Schedule => "schedule",
            Self::Shutdown => "shutdown",
            Self::Recovery => "recovery",
        }
    }
}

/// A gap in the recording just before a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapBefore {
    pub cause: ClosedBy,
    /// Measured from the capture clock: first frame of this segment minus the end of the last frame
    /// recorded before the gap, on the monotonic clock.
    pub millis: u64,
}

/// What is known about a segment when its first frame arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMeta {
    pub station: String,
    pub device: String,
    pub make: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub position: Option<(f64, f64)>,
    pub elevation_m: Option<f64>,
    pub rate: u32,
    pub channels: u16,
    pub seq: u64,
    /// Wall-clock time of the first frame (Unix ms), from the capture clock.
    pub wall_unix_ms: i64,
    /// Whether the wall clock was trusted (NTP/RTC synced) when the segment started.
    pub clock_trusted: bool,
    /// CLOCK_MONOTONIC of the first frame, ns.
    pub monotonic_ns: u64,
    /// Index of the first frame in the capture stream since the device was opened.
    pub stream_frame: u64,
    pub utc_offset_minutes: i32,
    pub file_name: String,
    pub gap_before: Option<GapBefore>,
}

/// The GUANO text written when a segment is opened (everything but its length).
#[must_use]
pub fn opening_text(m: &SegmentMeta) -> String {
    let mut s = String::with_capacity(768);
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        // Values never contain newlines: they are sanitised ids and numbers.
        let _ = writeln!(s, "{k}: {v}");
    };
    line("GUANO|Version", &"1.0");
    line(
        "Timestamp",
        &civil::iso_with_offset(m.wall_unix_ms, m.utc_offset_minutes),
    );
    line("Samplerate", &m.rate);
    if let Some(v) = &m.make {
        line("Make", &one_line(v));
    }
    if let Some(v) = &m.model {
        line("Model", &one_line(v));
    }
    if let Some(v) = &m.serial {
        line("Serial", &one_line(v));
    }
    if let Some((lat, lon)) = m.position {
        line("Loc Position", &format_args!("{lat:.6} {lon:.6}"));
    }
    if let Some(e) = m.elevation_m {
        line("Loc Elevation", &format_args!("{e:.1}"));
    }
    line("Original Filename", &m.file_name);
    line("FLEET|Version", &"1");
    line("FLEET|Station", &m.station);
    line("FLEET|Device", &m.device);
    line("FLEET|Channels", &m.channels);
    line("FLEET|Segment Seq", &m.seq);
    line("FLEET|Clock Trusted", &m.clock_trusted);
    line("FLEET|Monotonic Ns", &m.monotonic_ns);
    line("FLEET|Stream Frame", &m.stream_frame);
    if let Some(g) = m.gap_before {
        line("FLEET|Gap Before Ms", &g.millis);
        line("FLEET|Gap Cause", &g.cause.as_str());
    }
    s
}

/// Lines appended when a segment is closed (or repaired).
#[must_use]
pub fn closing_lines(frames: u64, rate: u32, closed_by: ClosedBy) -> String {
    let mut s = String::with_capacity(96);
    let secs = frames as f64 / f64::from(rate.max(1));
    let _ = writeln!(s, "Length: {secs:.6}");
    let _ = writeln!(s, "FLEET|Frames: {frames}");
    let _ = writeln!(s, "FLEET|Closed By: {}", closed_by.as_str());
    if closed_by == ClosedBy::Recovery {
        let _ = writeln!(s, "FLEET|Repaired: true");
    }
    s
}

/// Drops the lines that `closing_lines` adds, so a text can be closed again (repair of a segment that
/// was already finalised but not yet promoted when the power went).
#[must_use]
pub fn strip_closing(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        let key = l.split(':').next().unwrap_or("").trim();
        if l.trim().is_empty()
            || matches!(
                key,
                "Length" | "FLEET|Frames" | "FLEET|Closed By" | "FLEET|Repaired"
            )
        {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Value of a key in a GUANO text, if present.
#[must_use]
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn one_line(v: &str) -> String {
    v.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SegmentMeta {
        SegmentMeta {
            station: "st-1".into(),
            device: "mic0".into(),
            make: Some("Dodotronic".into()),
            model: Some("UltraMic\n384K".into()),
            serial: None,
            position: Some((52.5, -1.25)),
            elevation_m: None,
            rate: 384_000,
            channels: 1,
            seq: 7,
            wall_unix_ms: 1_795_373_580_123,
            clock_trusted: true,
            monotonic_ns: 42,
            stream_frame: 0,
            utc_offset_minutes: 60,
            file_name: "x.wav".into(),
            gap_before: Some(GapBefore {
                cause: ClosedBy::Xrun,
                millis: 1500,
            }),
        }
    }

    #[test]
    fn opening_text_carries_timestamp_with_offset_and_namespaced_fields() {
        let t = opening_text(&meta());
        assert!(t.starts_with("GUANO|Version: 1.0\n"));
        assert_eq!(
            field(&t, "Timestamp"),
            Some("2026-11-22T19:53:00.123+01:00")
        );
        assert_eq!(field(&t, "Model"), Some("UltraMic 384K"));
        assert_eq!(field(&t, "Loc Position"), Some("52.500000 -1.250000"));
        assert_eq!(field(&t, "FLEET|Segment Seq"), Some("7"));
        assert_eq!(field(&t, "FLEET|Gap Cause"), Some("xrun"));
        assert_eq!(field(&t, "FLEET|Gap Before Ms"), Some("1500"));
    }

    #[test]
    fn closing_twice_keeps_one_set_of_closing_fields() {
        let open = opening_text(&meta());
        let once = format!(
            "{open}{}",
            closing_lines(384_000, 384_000, ClosedBy::Length)
        );
        let again = format!(
            "{}{}",
            strip_closing(&once),
            closing_lines(192_000, 384_000, ClosedBy::Recovery)
        );
        assert_eq!(again.matches("Length:").count(), 1);
        assert_eq!(field(&again, "Length"), Some("0.500000"));
        assert_eq!(field(&again, "FLEET|Repaired"), Some("true"));
        assert_eq!(field(&again, "FLEET|Closed By"), Some("recovery"));
    }
}
