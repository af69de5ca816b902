//! Upload windows: daily spans of local time in which the link may be used (daytime on a solar
//! station, or outside the recording schedule). Decided on the trusted wall clock only.

use crate::time::Now;

/// Minutes since local midnight, `0..1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinuteOfDay(u16);

impl MinuteOfDay {
    /// `None` at or above 1440.
    #[must_use]
    pub const fn new(minute: u16) -> Option<Self> {
        if minute < 1440 {
            Some(Self(minute))
        } else {
            None
        }
    }
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unable to read window {text:?}: write it as HH:MM-HH:MM, e.g. 06:00-18:30")]
    Syntax { text: String },
    #[error("unable to accept window {text:?}: it starts and ends at the same minute")]
    Empty { text: String },
}

/// A daily span `[start, end)`; when `end < start` it runs over midnight (22:00-04:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
}

fn minute(text: &str) -> Option<MinuteOfDay> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if h == 24 && m == 0 {
        // 24:00 is the end of the day: the same minute as 00:00 for an end.
        return MinuteOfDay::new(0);
    }
    if h > 23 || m > 59 {
        return None;
    }
    MinuteOfDay::new(h * 60 + m)
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    ///
    /// # Errors
    /// Another syntax, or a window that starts where it ends.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let syntax = || WindowError::Syntax {
            text: text.to_owned(),
        };
        let (a, b) = text.split_once('-').ok_or_else(syntax)?;
        let start = minute(a).ok_or_else(syntax)?;
        let end = minute(b).ok_or_else(syntax)?;
        if start == end {
            return Err(WindowError::Empty {
                text: text.to_owned(),
            });
        }
        Ok(Self { start, end })
    }

    /// Whether `m` lies in the window.
    #[must_use]
    pub fn contains(&self, m: MinuteOfDay) -> bool {
        if self.start < self.end {
            self.start <= m && m < self.end
        } else {
            m >= self.start || m < self.end
        }
    }
}

/// What to do while the wall clock is not trusted (windows cannot be placed in the day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntrustedClock {
    /// Upload anyway: the recordings leave the station, the windows are ignored.
    Upload,
    /// Wait for a trusted clock.
    Wait,
}

/// Whether the link may be used at `now`. No windows: always. `utc_offset_minutes` places local
/// midnight.
#[must_use]
pub fn window_open(
    windows: &[Window],
    utc_offset_minutes: i32,
    untrusted: UntrustedClock,
    now: Now,
) -> bool {
    if windows.is_empty() {
        return true;
    }
    let Some(wall) = now.wall_unix_s else {
        return untrusted == UntrustedClock::Upload;
    };
    let local = wall.saturating_add(i64::from(utc_offset_minutes) * 60);
    let m = local.rem_euclid(86_400) / 60;
    let Some(m) = u16::try_from(m).ok().and_then(MinuteOfDay::new) else {
        return false;
    };
    windows.iter().any(|w| w.contains(m))
}
