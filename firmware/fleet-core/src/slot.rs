//! Root-filesystem slots.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two root-filesystem slots. Never an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The slot that is not `self`.
    #[must_use]
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Lower-case name as used by RAUC bootnames and U-Boot (`A`/`B` upper-case there).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse slot {0:?}: expected A or B")]
pub struct ParseSlotError(pub String);

impl FromStr for Slot {
    type Err = ParseSlotError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "A" | "a" => Ok(Slot::A),
            "B" | "b" => Ok(Slot::B),
            other => Err(ParseSlotError(other.to_owned())),
        }
    }
}

/// What the boot flow believes about a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotHealth {
    /// Committed: booted and passed its health checks.
    Good,
    /// Installed, on trial: it has attempts left but has not been committed.
    Trial,
    /// Must not be booted.
    Bad,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_slot_of_a_is_b_and_back() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::B.other(), Slot::A);
    }

    #[test]
    fn slot_names_round_trip_and_garbage_is_refused() {
        for s in Slot::ALL {
            assert_eq!(s.to_string().parse::<Slot>(), Ok(s));
        }
        assert!("C".parse::<Slot>().is_err());
        assert!("".parse::<Slot>().is_err());
    }
}
