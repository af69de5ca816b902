//! Counts over the last 24 hours from counters that only grow, except when their daemon
//! restarts and they start again from zero.

use std::collections::VecDeque;

/// The window's length, in milliseconds.
pub const DAY_MS: u64 = 24 * 3600 * 1000;
/// Samples are kept at most this often (one per 10 minutes: at most 145 per counter).
pub const SAMPLE_EVERY_MS: u64 = 10 * 60 * 1000;

/// One counter's history.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The counter's last raw value.
    last_raw: Option<u64>,
    /// The sum of every increase seen (survives the counter's resets).
    total: u64,
    /// (monotonic ms, total), oldest first.
    samples: VecDeque<(u64, u64)>,
}

impl Window {
    /// Takes the counter's value at `now_ms` and returns the increase over the last 24 hours
    /// (or since the first observation, when that is younger).
    pub fn observe(&mut self, now_ms: u64, raw: u64) -> u64 {
        let delta = match self.last_raw {
            None => 0,
            Some(prev) if raw >= prev => raw - prev,
            // The counter started again (its daemon restarted): everything it holds is new.
            Some(_) => raw,
        };
        if self.last_raw.is_none() {
            // The first observation counts what the counter holds: its daemon is younger
            // than a day in the common case, and the reporter cannot know better.
            self.total = raw;
            self.samples.push_back((now_ms, 0));
        }
        self.last_raw = Some(raw);
        self.total = self.total.saturating_add(delta);
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now_ms.saturating_sub(*t) >= SAMPLE_EVERY_MS)
        {
            self.samples.push_back((now_ms, self.total));
        }
        // Keep exactly one sample at or before the window's start.
        let start = now_ms.saturating_sub(DAY_MS);
        while self.samples.len() >= 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
        let base = self.samples.front().map_or(0, |(_, v)| *v);
        self.total.saturating_sub(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: u64 = 3600 * 1000;

    #[test]
    fn increases_older_than_a_day_drop_out_and_restarts_keep_the_count() {
        let mut w = Window::default();
        assert_eq!(w.observe(0, 5), 5);
        assert_eq!(w.observe(H, 10), 10);
        // The daemon restarts: its counter begins at 2.
        assert_eq!(w.observe(2 * H, 2), 12);
        // A day and a bit later only what came after hour 1 (and the first sample's base) remains.
        assert_eq!(w.observe(25 * H + 1, 2), 2);
        assert_eq!(w.observe(27 * H, 2), 0);
    }

    proptest! {
        #[test]
        fn the_day_count_never_exceeds_every_increase_seen(
            steps in proptest::collection::vec((0u64..3 * H, 0u64..1000), 1..200)
        ) {
            let mut w = Window::default();
            let (mut t, mut seen, mut prev) = (0u64, 0u64, None::<u64>);
            for (dt, raw) in steps {
                t += dt;
                seen += match prev { None => raw, Some(p) if raw >= p => raw - p, Some(_) => raw };
                prev = Some(raw);
                let got = w.observe(t, raw);
                prop_assert!(got <= seen);
                prop_assert!(w.samples.len() <= (DAY_MS / SAMPLE_EVERY_MS) as usize + 2);
            }
        }
    }
}
