//! Segment planning, pure: segments are cut by sample count (never by wall clock, which NTP can step),
//! and named so that names sort by time and carry the station and device.

use crate::civil;

/// Capture-clock time of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// CLOCK_MONOTONIC, ns.
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME, ns since the Unix epoch (trust is decided separately).
    pub wall_unix_ns: i64,
}

impl Stamp {
    /// The stamp `frames` later at `rate`.
    #[must_use]
    pub fn advanced(self, frames: u64, rate: u32) -> Self {
        let ns = frames_to_ns(frames, rate);
        Self {
            monotonic_ns: self.monotonic_ns.saturating_add(ns),
            wall_unix_ns: self.wall_unix_ns.saturating_add(ns as i64),
        }
    }
}

/// Duration of `frames` at `rate`, ns.
#[must_use]
pub fn frames_to_ns(frames: u64, rate: u32) -> u64 {
    (u128::from(frames) * 1_000_000_000 / u128::from(rate.max(1))) as u64
}

/// How many of the `available` frames go into the current segment, and whether it is then complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub take: u64,
    pub completes: bool,
}

/// Cuts a stream into segments of exactly `frames_per_segment` frames.
#[must_use]
pub fn plan_split(frames_per_segment: u64, frames_in_segment: u64, available: u64) -> Split {
    let room = frames_per_segment.saturating_sub(frames_in_segment);
    let take = room.min(available);
    Split {
        take,
        completes: frames_in_segment + take >= frames_per_segment,
    }
}

/// File-name-safe form of an id: `[A-Za-z0-9-]`, anything else becomes `-`.
#[must_use]
pub fn sanitize_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `20261122T185300.123Z_<station>_<device>_00000042.wav`.
#[must_use]
pub fn segment_name(wall_unix_ms: i64, station: &str, device: &str, seq: u64) -> String {
    format!(
        "{}_{}_{}_{:08}.wav",
        civil::compact_utc(wall_unix_ms),
        sanitize_id(station),
        sanitize_id(device),
        seq
    )
}

/// The sequence number in a name made by `segment_name` for this station and device.
#[must_use]
pub fn seq_of(name: &str, station: &str, device: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wav")?;
    let mut parts = stem.rsplitn(4, '_');
    let seq = parts.next()?;
    let dev = parts.next()?;
    let st = parts.next()?;
    (dev == sanitize_id(device) && st == sanitize_id(station) && seq.len() == 8)
        .then(|| seq.parse().ok())
        .flatten()
}

/// The next sequence number after every name seen (continues across restarts).
#[must_use]
pub fn next_seq<'a>(names: impl IntoIterator<Item = &'a str>, station: &str, device: &str) -> u64 {
    names
        .into_iter()
        .filter_map(|n| seq_of(n, station, device))
        .max()
        .map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_cut_by_sample_count() {
        // table: (segment length, already in segment, available) -> (take, completes)
        let cases = [
            (100, 0, 40, (40, false)),
            (100, 60, 40, (40, true)),
            (100, 90, 40, (10, true)),
            (100, 0, 100, (100, true)),
            (100, 99, 0, (0, false)),
        ];
        for (len, inside, avail, (take, completes)) in cases {
            assert_eq!(plan_split(len, inside, avail), Split { take, completes });
        }
    }

    #[test]
    fn a_chunk_stream_is_cut_into_exact_segments_whatever_the_chunk_sizes() {
        let len = 1000;
        let mut inside = 0;
        let mut segments = vec![];
        for chunk in [333u64, 999, 1, 2500, 167, 0, 1000]
            .into_iter()
            .cycle()
            .take(70)
        {
            let mut left = chunk;
            while left > 0 {
                let s = plan_split(len, inside, left);
                inside += s.take;
                left -= s.take;
                if s.completes {
                    segments.push(inside);
                    inside = 0;
                }
            }
        }
        assert!(segments.iter().all(|&n| n == len));
    }

    #[test]
    fn names_sort_by_time_and_carry_station_device_and_sequence() {
        let a = segment_name(1_795_373_580_123, "st 1", "mic_0", 9);
        let b = segment_name(1_795_373_640_123, "st 1", "mic_0", 10);
        assert_eq!(a, "20261122T185300.123Z_st-1_mic-0_00000009.wav");
        assert!(a < b);
        assert_eq!(seq_of(&b, "st 1", "mic_0"), Some(10));
        assert_eq!(seq_of(&b, "st 1", "other"), None);
        assert_eq!(
            next_seq([a.as_str(), b.as_str(), "junk.wav"], "st 1", "mic_0"),
            11
        );
        assert_eq!(next_seq([], "s", "d"), 0);
    }

    #[test]
    fn stamps_advance_by_the_sample_clock() {
        let s = Stamp {
            monotonic_ns: 1_000,
            wall_unix_ns: 5_000,
        };
        let t = s.advanced(48_000, 48_000);
        assert_eq!(t.monotonic_ns, 1_000_001_000);
        assert_eq!(t.wall_unix_ns, 1_000_005_000);
    }
}
