//! The station (pure): one value, [`Station`], holding everything a station decides with (the
//! update engine's state, the operator controls in force, the offers they hold back, the
//! offers waiting for the station to be free, the trusted key set), and one
//! [`step`]`(station, input, now)` that returns the next value and the actions the shell
//! carries out.
//!
//! Every message a station reads enters here once, already opened by `fleet-proto` (the core
//! performs no cryptography): offers, controls and key rotations; every result of an action
//! comes back here too (downloads, verification, installs, boot-control calls, health checks).
//! Admission, holds and releases under controls, re-offers after `busy`, duplicate handling and
//! the gate before anything is written to a slot are decided here and nowhere else: the daemon
//! (`fleet-updated`) and the simulator (`fleetctl sim`) run this same value.
//!
//! # The shell's contract
//! 1. Feed [`Input::Started`] once at every daemon start, then every message and every result.
//! 2. Carry out [`Transition::actions`] in order. [`Action::Save`] comes before whatever it
//!    makes possible: write the named part of the station durably (temp file, fsync, rename,
//!    fsync directory) before the next action runs.
//! 3. Feed every action's result back as an [`Input::Event`] (see
//!    [`crate::update::engine`]).
//! 4. [`Transition::ignored`] names an input that did not fit (a stale result): log it.
//!
//! # Rules
//! - **Duplicates**: a message identical to the last one handled on its topic is ignored (the
//!   broker sends retained messages again on every reconnect); an offer the engine already
//!   acted on (same sequence, the update in progress or the one that ended last) is ignored.
//! - **Admission runs once**: the offer rules ([`crate::update::decide_offer`]), then the
//!   controls ([`crate::rollout::decide_control`]). A control refusal (frozen, halted,
//!   pinned) holds the offer back, per topic, reported once per reason; anything else is a
//!   rejection. The engine takes an admitted offer or refuses it as `busy`.
//! - **Busy**: an offer refused as busy waits, one per topic, and is offered again as soon as
//!   the station is idle on its committed slot.
//! - **Retraction**: an empty retained offer withdraws whatever waits on that topic (held or
//!   busy): a retracted offer is never installed. The same offer published again later is
//!   judged afresh; a newer offer on a topic replaces the one waiting there as busy.
//! - **Install gate**: a verified bundle is installed only if its signing key is still trusted
//!   and the controls in force allow it; otherwise it is held, the bundle kept, until a
//!   control or a rotation releases it.
//! - **Controls and rotations** are persisted ([`Store::Controls`], [`Store::Trust`]) before
//!   they take effect; then every held offer and a held install are judged again.
//!
//! # Invariants (property-tested in `tests/station_invariants.rs`)
//! - A frozen or halted station never installs; a pinned station never installs above its pin.
//! - An offer is admitted at most once.
//! - No install without a verified bundle allowed by the controls in force.
//! - The slot installed into is never the booted one.
//! - A retracted offer is never installed.
use std::collections::BTreeMap;

use crate::ids::{UpdateId, Version};
use crate::ports::BootStatus;
use crate::rollout::{Control, Effective, Scope, responsible};
use crate::time::Now;
use crate::trust::{Rotation, RotationReject, TrustState};
use crate::update::{self, Event, KeyId, Offer, RejectReason, Rejected, Report, State};

mod offers;
mod signals;
#[cfg(test)]
mod tests;

/// Most offers held back by controls at once (one per offer topic the station reads); more are
/// dropped until one goes.
pub const MAX_HELD_OFFERS: usize = 64;
/// Longest free-text detail this module puts in a refusal, in bytes.
pub const MAX_REFUSAL_DETAIL: usize = 200;

/// SHA-256 of a message's bytes: what duplicate handling compares.
pub type MessageDigest = [u8; 32];

/// An offer whose envelope verified, with the key that signed it and the message's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOffer {
    pub offer: Offer,
    pub key_id: KeyId,
    pub digest: MessageDigest,
}

/// An offer held back by a control, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldOffer {
    signed: SignedOffer,
    reason: RejectReason,
}

/// What the station reports as held back in its retained state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldView {
    pub update_id: UpdateId,
    pub version: Version,
    pub reason: RejectReason,
    /// The control that holds it back, as (scope, sequence).
    pub scope: Option<Scope>,
    pub control_sequence: Option<u64>,
}

/// Everything a station decides with. Build it with [`Station::new`] from what the shell
/// loaded; change it only through [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Station {
    engine: State,
    /// The newest accepted control per control topic.
    controls: BTreeMap<String, Control>,
    trust: TrustState,
    /// SHA-256 of the rotation message applied last (the retained one comes again).
    applied_rotation: Option<MessageDigest>,
    /// Offers held back by a control, by offer topic.
    held_offers: BTreeMap<String, HeldOffer>,
    /// Offers refused as busy, by offer topic: offered again once the station is idle.
    busy_offers: BTreeMap<String, SignedOffer>,
    /// The job's verified bundle is held before install, and why.
    held_install: Option<RejectReason>,
    /// Digest of the last message handled per offer topic (this run).
    seen_offers: BTreeMap<String, MessageDigest>,
    /// Digest of the last rotation message handled (this run).
    seen_rotation: Option<MessageDigest>,
}

/// Something that happened, fed to [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The daemon started; `BootStatus` says which slot runs.
    Started(BootStatus),
    /// A message on an offer topic whose envelope verified.
    Offer { topic: String, signed: SignedOffer },
    /// A message on an offer topic that could not be opened (bad signature, unknown key,
    /// malformed, oversize).
    OfferUnusable {
        topic: String,
        digest: MessageDigest,
        reason: RejectReason,
    },
    /// The retained offer on `topic` was cleared (an empty message).
    OfferRetracted { topic: String },
    /// A control message whose envelope verified, on the topic of `topic_scope`.
    Control {
        topic: String,
        topic_scope: Scope,
        control: Control,
    },
    /// A message on a control topic that could not be opened.
    ControlUnusable {
        topic_scope: Scope,
        reason: RejectReason,
    },
    /// A key rotation whose envelope verified, signed by `signer`.
    Rotation {
        digest: MessageDigest,
        rotation: Rotation,
        signer: KeyId,
    },
    /// A message on the rotation topic that could not be opened.
    RotationUnusable {
        digest: MessageDigest,
        reason: RotationReject,
    },
    /// A retained message of `size` bytes on `on` that the station cannot read at all: it is
    /// above the MQTT session's transport ceiling, so the session skipped the topic for a
    /// while. Refused as `too-large` like a readable message over `limit` (its topic's limit);
    /// see [`Unreadable`].
    Unreadable {
        on: Unreadable,
        size: u64,
        limit: u64,
    },
    /// The result of an action (download, verification, install, boot control, health).
    /// `Started` and offers enter as their own inputs; sent here they are ignored.
    Event(Event),
}

/// The topic an unreadable message came on ([`Input::Unreadable`]), as the shell recognised
/// it. Each is refused the way a readable message over its limit is: an offer topic with
/// `offer-rejected` (`too-large`), a control topic with `control-refused` (`too-large`), the
/// rotation topic with `rotation-refused` (`too-large`). The same unreadable message again
/// (same size, when the session tries the topic again) is a duplicate on offer and rotation
/// topics, as a readable one is; on a control topic it is reported at every try, as an
/// unusable control is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// A device or group offer topic.
    Offer { topic: String },
    /// The control topic of `topic_scope`.
    Control { topic_scope: Scope },
    /// The key-rotation topic.
    Rotation,
}

/// What duplicate handling compares for a message that was never read: its size stands in for
/// its bytes (a SHA-256 ending in 24 bytes of 0xff is not expected to occur).
#[must_use]
pub fn unreadable_digest(size: u64) -> MessageDigest {
    let mut d = [0xff; 32];
    d[..8].copy_from_slice(&size.to_be_bytes());
    d
}

/// A part of the station the shell writes durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The engine state ([`Station::engine`]): the journal.
    Journal,
    /// The controls in force ([`Station::controls`]).
    Controls,
    /// The trusted key set and the applied rotation ([`Station::trust`]); verify every
    /// message from now on with it.
    Trust,
}

/// Something the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this part of the station durably before the next action.
    Save(Store),
    /// Publish a station event about `update_id` (the job's, or the job that just ended).
    Report {
        update_id: Option<UpdateId>,
        report: Report,
    },
    /// Carry out an engine action (never a report: those come as [`Action::Report`]).
    Update(update::Action),
    /// The retained state changed: publish it.
    PublishState,
}

/// The result of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub next: Station,
    pub actions: Vec<Action>,
    /// An input the engine refused as not fitting its state (nothing happened for it).
    pub ignored: Option<Rejected>,
}

impl Station {
    /// A station from what the shell loaded: its journal, its controls file and its trusted
    /// keys (with the digest of the rotation applied last).
    #[must_use]
    pub fn new(
        engine: State,
        controls: BTreeMap<String, Control>,
        trust: TrustState,
        applied_rotation: Option<MessageDigest>,
    ) -> Self {
        Self {
            engine,
            controls,
            trust,
            applied_rotation,
            held_offers: BTreeMap::new(),
            busy_offers: BTreeMap::new(),
            held_install: None,
            seen_offers: BTreeMap::new(),
            seen_rotation: None,
        }
    }

    /// The update engine's state (what the journal holds).
    #[must_use]
    pub fn engine(&self) -> &State {
        &self.engine
    }

    /// The newest accepted control per control topic (what the controls file holds).
    #[must_use]
    pub fn controls(&self) -> &BTreeMap<String, Control> {
        &self.controls
    }

    /// The offer-signing keys trusted now.
    #[must_use]
    pub fn trust(&self) -> &TrustState {
        &self.trust
    }

    /// SHA-256 of the rotation message applied last.
    #[must_use]
    pub fn applied_rotation(&self) -> Option<MessageDigest> {
        self.applied_rotation
    }

    /// The controls in force, merged over the station's scopes.
    #[must_use]
    pub fn effective(&self) -> Effective {
        Effective::merge(self.controls.values())
    }

    /// What the retained state reports as held: the job's install first, else an offer.
    #[must_use]
    pub fn held(&self) -> Option<HeldView> {
        if let (Some(reason), Some(job)) = (&self.held_install, self.engine.phase.job()) {
            return Some(self.held_view(&job.update_id, &job.version, reason));
        }
        self.held_offers.values().next().map(|h| {
            self.held_view(
                &h.signed.offer.update_id,
                &h.signed.offer.version,
                &h.reason,
            )
        })
    }

    /// Offers waiting (held back by a control, or refused as busy) on `topic`.
    #[must_use]
    pub fn waiting_on(&self, topic: &str) -> Option<&Offer> {
        self.held_offers
            .get(topic)
            .map(|h| &h.signed.offer)
            .or_else(|| self.busy_offers.get(topic).map(|s| &s.offer))
    }

    fn held_view(
        &self,
        update_id: &UpdateId,
        version: &Version,
        reason: &RejectReason,
    ) -> HeldView {
        let (scope, control_sequence) = self.culprit(reason);
        HeldView {
            update_id: update_id.clone(),
            version: version.clone(),
            reason: reason.clone(),
            scope,
            control_sequence,
        }
    }

    /// The control message responsible for `reason`, as (scope, sequence).
    fn culprit(&self, reason: &RejectReason) -> (Option<Scope>, Option<u64>) {
        let found = responsible(self.controls.values(), reason);
        (found.map(|c| c.scope.clone()), found.map(|c| c.sequence))
    }
}

/// Advances the station by one input. See the module documentation for the rules.
#[must_use]
pub fn step(station: &Station, input: Input, now: Now) -> Transition {
    let mut run = Run {
        next: station.clone(),
        actions: Vec::new(),
        ignored: None,
        now,
    };
    match input {
        Input::Started(status) => {
            run.feed(Event::Started(status));
        }
        Input::Offer { topic, signed } => run.on_offer(topic, signed.digest, Ok(signed)),
        Input::OfferUnusable {
            topic,
            digest,
            reason,
        } => run.on_offer(topic, digest, Err(reason)),
        Input::OfferRetracted { topic } => run.on_retracted(&topic),
        Input::Control {
            topic,
            topic_scope,
            control,
        } => run.on_control(topic, topic_scope, control),
        Input::ControlUnusable {
            topic_scope,
            reason,
        } => run.refuse_control(Some(topic_scope), None, reason),
        Input::Rotation {
            digest,
            rotation,
            signer,
        } => run.on_rotation(digest, Ok((rotation, signer))),
        Input::RotationUnusable { digest, reason } => run.on_rotation(digest, Err(reason)),
        Input::Unreadable { on, size, limit } => run.on_unreadable(on, size, limit),
        Input::Event(Event::BundleVerified { bundle_id }) => run.verified(bundle_id),
        Input::Event(
            event @ (Event::Started(_)
            | Event::OfferReceived { .. }
            | Event::OfferAdmitted { .. }
            | Event::OfferUnusable { .. }),
        ) => {
            run.ignored = Some(Rejected {
                phase: station.engine.phase.name(),
                event: event.name(),
                why: "starts and offers enter as their own inputs",
            });
        }
        Input::Event(event) => {
            run.feed(event);
        }
    }
    run.retry_busy_offers();
    Transition {
        next: run.next,
        actions: run.actions,
        ignored: run.ignored,
    }
}

/// One step in progress.
struct Run {
    next: Station,
    actions: Vec<Action>,
    ignored: Option<Rejected>,
    now: Now,
}

impl Run {
    /// Steps the engine with `event`; returns true when it refused an offer as busy.
    fn feed(&mut self, event: Event) -> bool {
        let t = match update::step(&self.next.engine, event, self.now) {
            Ok(t) => t,
            Err(rejected) => {
                self.ignored = Some(rejected);
                return false;
            }
        };
        let changed = t.next != self.next.engine;
        let ended = self.next.engine.phase.job().map(|j| j.update_id.clone());
        if changed {
            if t.next.phase.name() != self.next.engine.phase.name() {
                self.next.held_install = None;
            }
            self.next.engine = t.next;
            // Intent before action: the journal holds the new state before anything runs.
            self.actions.push(Action::Save(Store::Journal));
        }
        let update_id = self
            .next
            .engine
            .phase
            .job()
            .map(|j| j.update_id.clone())
            .or(ended);
        let mut busy = false;
        for action in t.actions {
            match action {
                update::Action::Report(report) => {
                    busy |= matches!(
                        report,
                        Report::OfferRejected {
                            reason: RejectReason::Busy { .. },
                            ..
                        }
                    );
                    self.actions.push(Action::Report {
                        update_id: update_id.clone(),
                        report,
                    });
                }
                other => self.actions.push(Action::Update(other)),
            }
        }
        if changed {
            self.actions.push(Action::PublishState);
        }
        busy
    }

    /// Publishes a station-level report (about the job in progress, if any).
    fn report(&mut self, report: Report) {
        let update_id = self.next.engine.phase.job().map(|j| j.update_id.clone());
        self.actions.push(Action::Report { update_id, report });
    }
}
