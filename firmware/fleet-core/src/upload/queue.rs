//! Which recording goes next, or why nothing goes now.

use super::retry::Attempts;

/// The order in which recordings leave the station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The oldest first (the index's recording order): the backlog drains in order.
    OldestFirst,
    /// The newest first: fresh data reaches the researchers first; the backlog waits.
    NewestFirst,
}

/// A recording waiting in the index, with its retry state. `order` is the index row id (the
/// recording order, station-wide, independent of the wall clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub order: i64,
    pub uploaded: bool,
    pub deleted: bool,
    pub attempts: Attempts,
}

/// What holds the whole link back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkGate {
    /// Inside an upload window (see [`super::window_open`]).
    pub window_open: bool,
    /// An update download is running (it shares the link).
    pub update_downloading: bool,
    /// The link's own retry state (link-scope failures).
    pub link: Attempts,
}

/// Why nothing is uploaded now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    OutsideWindow,
    UpdateDownload,
    LinkBackoff,
    RecordingBackoff,
}

/// The answer of [`pick_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Upload the candidate with this `order`.
    Upload(i64),
    /// Nothing now; look again at `until_ms` (monotonic) or, when `None`, when the reason may
    /// have changed (the next poll).
    Wait {
        reason: WaitReason,
        until_ms: Option<u64>,
    },
    /// Nothing is waiting.
    Idle,
}

/// Picks the next recording. Parked recordings that are due go after every unparked one.
#[must_use]
pub fn pick_next(candidates: &[Candidate], order: Order, gate: &LinkGate, now_ms: u64) -> Pick {
    let waiting = || candidates.iter().filter(|c| !c.uploaded && !c.deleted);
    if waiting().next().is_none() {
        return Pick::Idle;
    }
    if !gate.window_open {
        return Pick::Wait {
            reason: WaitReason::OutsideWindow,
            until_ms: None,
        };
    }
    if gate.update_downloading {
        return Pick::Wait {
            reason: WaitReason::UpdateDownload,
            until_ms: None,
        };
    }
    if gate.link.not_before_ms > now_ms {
        return Pick::Wait {
            reason: WaitReason::LinkBackoff,
            until_ms: Some(gate.link.not_before_ms),
        };
    }
    let due = waiting().filter(|c| c.attempts.not_before_ms <= now_ms);
    // Key: unparked first, then the configured order.
    let best = due.min_by_key(|c| {
        let o = match order {
            Order::OldestFirst => c.order,
            Order::NewestFirst => c.order.saturating_neg(),
        };
        (c.attempts.parked, o)
    });
    match best {
        Some(c) => Pick::Upload(c.order),
        None => Pick::Wait {
            reason: WaitReason::RecordingBackoff,
            until_ms: waiting().map(|c| c.attempts.not_before_ms).min(),
        },
    }
}
