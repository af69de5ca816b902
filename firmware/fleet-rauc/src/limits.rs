//! Every bound the RAUC adapter keeps, in one place.
use std::time::Duration;

/// Limits of the RAUC adapter. `Limits::default()` is what stations run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest an install may take from `InstallBundle` to `Completed` before the adapter gives
    /// up with a retryable error. A rootfs of a few hundred MiB on an SD card takes minutes; a
    /// hung RAUC must not hold the updater forever.
    pub install_timeout: Duration,
    /// Longest a single D-Bus call to RAUC may take (status, mark, the install request itself).
    pub call_timeout: Duration,
    /// Capacity of the adapter's incoming D-Bus message queue. During an install the adapter
    /// reads every signal in order from one queue; RAUC sends a few dozen per install.
    pub message_queue: usize,
    /// Longest RAUC text (error reason, progress message) passed on, in bytes; longer text is
    /// cut at a character boundary. Keeps MQTT state messages small.
    pub max_text_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            install_timeout: Duration::from_secs(30 * 60),
            call_timeout: Duration::from_secs(30),
            message_queue: 256,
            max_text_len: 1024,
        }
    }
}

/// Cuts `text` to at most `max` bytes without splitting a character.
#[must_use]
pub fn clip(text: &str, max: usize) -> String {
    let cut = fleet_core::update::offer::truncate(text, max);
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(clip("aé", 2), "a…");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
