//! Station-side obedience: halts, the emergency freeze and version pins.
//!
//! Operators publish signed, retained [`Control`] messages for the whole fleet, a group or one
//! device. A station keeps the newest one per scope ([`accept_control`]), merges them
//! ([`Effective::merge`]) and asks [`decide_control`] both when an offer arrives and again
//! right before it starts installing: a halt or freeze that arrives during a download stops the
//! station before anything is written to a slot. An install already started runs to its end
//! (stopping it half way would leave a slot half written; the trial boot and fallback still
//! protect the station).
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, GroupId, UpdateId, Version};
use crate::update::{RejectReason, Station};

/// Most halted update ids one control message carries.
pub const MAX_HALTED: usize = 64;

/// Whom a control message is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scope {
    /// Every station: `"fleet"`.
    Fleet,
    /// Every member of a group: `{"group": "field"}`.
    Group(GroupId),
    /// One station: `{"device": "stn-0042"}`.
    Device(DeviceId),
}

/// A signed control message (envelope kind `control`), retained on its scope's control topic.
/// The message replaces the previous one of its scope: an unfreeze is a message with
/// `freeze: false` and a higher sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Control {
    pub scope: Scope,
    /// Strictly increasing per scope; a station refuses a sequence not above the last it took.
    pub sequence: u64,
    /// No station in scope starts a new install.
    #[serde(default)]
    pub freeze: bool,
    /// Updates stations in scope must not start installing (halted rollouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub halted: Vec<UpdateId>,
    /// Stations in scope take no version above this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Version>,
    /// Unix seconds when signed (informational).
    pub issued_at: i64,
}

/// Why a control message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlRefused {
    #[error("unable to accept control: its scope is not this station")]
    NotForThisStation,
    #[error("unable to accept control: sequence {sequence} is not above {last}")]
    Replayed { sequence: u64, last: u64 },
    #[error("unable to accept control: {0} halted updates is above the limit")]
    TooManyHalted(usize),
}

/// Checks a (signature-verified) control message against the station and the last sequence it
/// took for the same scope.
pub fn accept_control(
    station: &Station,
    last_sequence: Option<u64>,
    control: &Control,
) -> Result<(), ControlRefused> {
    let ours = match &control.scope {
        Scope::Fleet => true,
        Scope::Group(g) => station.groups.contains(g),
        Scope::Device(d) => *d == station.device_id,
    };
    if !ours {
        return Err(ControlRefused::NotForThisStation);
    }
    if let Some(last) = last_sequence
        && control.sequence <= last
    {
        return Err(ControlRefused::Replayed {
            sequence: control.sequence,
            last,
        });
    }
    if control.halted.len() > MAX_HALTED {
        return Err(ControlRefused::TooManyHalted(control.halted.len()));
    }
    Ok(())
}

/// The controls in force on one station, merged over its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effective {
    pub frozen: bool,
    pub halted: Vec<UpdateId>,
    /// The lowest pin of any scope.
    pub pin: Option<Version>,
}

impl Effective {
    /// Merges the current control of each scope: frozen if any scope is, every halted update,
    /// the lowest pin.
    #[must_use]
    pub fn merge<'a>(controls: impl IntoIterator<Item = &'a Control>) -> Self {
        let mut e = Effective::default();
        for c in controls {
            e.frozen |= c.freeze;
            for h in &c.halted {
                if !e.halted.contains(h) {
                    e.halted.push(h.clone());
                }
            }
            if let Some(p) = &c.pin {
                e.pin = Some(match e.pin.take() {
                    Some(q) if q <= *p => q,
                    _ => p.clone(),
                });
            }
        }
        e
    }
}

/// Whether a station may take (and, asked again before install, start installing) `update_id`
/// at `version`. Checked in order: freeze, halt, pin.
pub fn decide_control(
    effective: &Effective,
    update_id: &UpdateId,
    version: &Version,
) -> Result<(), RejectReason> {
    if effective.frozen {
        return Err(RejectReason::Frozen);
    }
    if effective.halted.contains(update_id) {
        return Err(RejectReason::Halted {
            update_id: update_id.clone(),
        });
    }
    if let Some(pin) = &effective.pin
        && version > pin
    {
        return Err(RejectReason::Pinned {
            pin: pin.clone(),
            offered: version.clone(),
        });
    }
    Ok(())
}

/// The control among `controls` that produced `reason` (a refusal of [`decide_control`]): the
/// one that freezes, halts that update, or sets that pin. `None` for any other reason.
pub fn responsible<'a>(
    controls: impl IntoIterator<Item = &'a Control>,
    reason: &RejectReason,
) -> Option<&'a Control> {
    controls.into_iter().find(|c| match reason {
        RejectReason::Frozen => c.freeze,
        RejectReason::Halted { update_id } => c.halted.contains(update_id),
        RejectReason::Pinned { pin, .. } => c.pin.as_ref() == Some(pin),
        _ => false,
    })
}

/// Offer admission under the controls in force: [`crate::update::decide_offer`]'s rules, then
/// [`decide_control`]. What a station's shell calls instead of `decide_offer` once it follows
/// control topics; before installing it calls [`decide_control`] again.
pub fn decide_offer_under_control(
    ctx: &crate::update::AdmissionContext<'_>,
    effective: &Effective,
    offer: &crate::update::Offer,
    verdict: crate::update::SignatureVerdict,
    now: crate::time::Now,
) -> Result<crate::update::Admitted, RejectReason> {
    let admitted = crate::update::decide_offer(ctx, offer, verdict, now)?;
    decide_control(effective, &offer.update_id, &offer.version)?;
    Ok(admitted)
}
