//! Offers at the station level: duplicates, admission under controls, holds and releases,
//! busy re-offers, retraction and the install gate.
use crate::rollout::decide_control;
use crate::station::{Action, HeldOffer, MAX_HELD_OFFERS, MessageDigest, Run, SignedOffer};
use crate::trust::KeyStatus;
use crate::update::{
    BundleId, Event, Job, Offer, Outcome, Phase, RejectReason, Report, SignatureVerdict, State,
    decide_offer,
};

impl Run {
    /// A message on an offer topic: handled once per distinct payload per topic.
    pub(super) fn on_offer(
        &mut self,
        topic: String,
        digest: MessageDigest,
        opened: Result<SignedOffer, RejectReason>,
    ) {
        if self.next.seen_offers.get(&topic) == Some(&digest) {
            return;
        }
        self.next.seen_offers.insert(topic.clone(), digest);
        // A newer message on the topic replaces whatever waited there as busy (it waits
        // again if it is refused as busy too).
        self.next.busy_offers.remove(&topic);
        self.judge_offer(topic, opened);
    }

    /// Admission of one offer (a new one, or one waiting that is judged again).
    fn judge_offer(&mut self, topic: String, opened: Result<SignedOffer, RejectReason>) {
        // The signature verified against the keys trusted when it arrived; a rotation since
        // may have retired or revoked the signer.
        let opened = opened.and_then(|s| match self.next.trust.status(&s.key_id) {
            KeyStatus::Trusted(_) => Ok(s),
            KeyStatus::Revoked => Err(RejectReason::RevokedKey { key_id: s.key_id }),
            KeyStatus::Unknown => Err(RejectReason::UnknownKey { key_id: s.key_id }),
        });
        let signed = match opened {
            Ok(s) => s,
            Err(reason) => {
                self.release(&topic, false);
                self.feed(Event::OfferUnusable { reason });
                return;
            }
        };
        if already_handled(&self.next.engine, &signed.offer) {
            // The retained offer of the update in progress (or just finished) comes again
            // after every restart: not a replay worth reporting.
            self.release(&topic, false);
            return;
        }
        let offer = &signed.offer;
        let verdict = SignatureVerdict::Trusted {
            key_id: signed.key_id,
        };
        let admitted = decide_offer(&self.next.engine.admission(), offer, verdict, self.now)
            .and_then(|admitted| {
                decide_control(&self.next.effective(), &offer.update_id, &offer.version)
                    .map(|()| admitted)
            });
        let admitted = match admitted {
            Ok(a) => a,
            Err(
                reason @ (RejectReason::Frozen
                | RejectReason::Halted { .. }
                | RejectReason::Pinned { .. }),
            ) => {
                self.hold(topic, signed, reason);
                return;
            }
            Err(reason) => {
                let same = self.holds_update(&topic, &offer.update_id);
                self.release(&topic, same);
                self.report(Report::OfferRejected {
                    update_id: Some(offer.update_id.clone()),
                    sequence: Some(offer.sequence),
                    reason,
                });
                return;
            }
        };
        // Released only when the same update goes ahead; another offer on the topic just
        // replaces the held one.
        let same = self.holds_update(&topic, &offer.update_id);
        self.release(&topic, same);
        let busy = self.feed(Event::OfferAdmitted {
            offer: signed.offer.clone(),
            admitted,
        });
        if busy {
            self.next.busy_offers.insert(topic, signed);
        }
    }

    fn holds_update(&self, topic: &str, update_id: &crate::ids::UpdateId) -> bool {
        self.next
            .held_offers
            .get(topic)
            .is_some_and(|h| h.signed.offer.update_id == *update_id)
    }

    /// Holds `signed` back on `topic` for `reason` (reported once per reason).
    fn hold(&mut self, topic: String, signed: SignedOffer, reason: RejectReason) {
        let same = self.next.held_offers.get(&topic).is_some_and(|h| {
            h.signed.offer.update_id == signed.offer.update_id && h.reason == reason
        });
        if !self.next.held_offers.contains_key(&topic)
            && self.next.held_offers.len() >= MAX_HELD_OFFERS
        {
            // Bounded: dropped; the retained offer comes again on the next reconnect.
            return;
        }
        let (update_id, sequence) = (signed.offer.update_id.clone(), signed.offer.sequence);
        self.next.held_offers.insert(
            topic,
            HeldOffer {
                signed,
                reason: reason.clone(),
            },
        );
        if !same {
            self.report_held(update_id, Some(sequence), reason);
        }
    }

    fn report_held(
        &mut self,
        update_id: crate::ids::UpdateId,
        sequence: Option<u64>,
        reason: RejectReason,
    ) {
        let (scope, control_sequence) = self.next.culprit(&reason);
        self.report(Report::OfferHeld {
            update_id,
            sequence,
            reason,
            scope,
            control_sequence,
        });
        self.actions.push(Action::PublishState);
    }

    /// Forgets the offer held on `topic`; `announce` reports that it goes ahead.
    fn release(&mut self, topic: &str, announce: bool) {
        let Some(h) = self.next.held_offers.remove(topic) else {
            return;
        };
        if announce {
            self.report(Report::OfferReleased {
                update_id: h.signed.offer.update_id,
            });
        }
        self.actions.push(Action::PublishState);
    }

    /// The retained offer on `topic` was cleared: the operator withdrew it. A retraction wins
    /// over whatever waits on the topic (held back by a control, or refused as busy), and the
    /// same offer published again later is judged afresh.
    pub(super) fn on_retracted(&mut self, topic: &str) {
        self.next.busy_offers.remove(topic);
        self.next.seen_offers.remove(topic);
        self.release(topic, false);
    }

    /// Why the job's verified bundle must not be installed now, if it must not: its signing
    /// key is no longer trusted, or a control refuses it.
    fn install_gate(&self, job: &Job) -> Option<RejectReason> {
        match self.next.trust.status(&job.key_id) {
            KeyStatus::Revoked => return Some(RejectReason::RevokedKey { key_id: job.key_id }),
            KeyStatus::Unknown | KeyStatus::Trusted(_) => {}
        }
        decide_control(&self.next.effective(), &job.update_id, &job.version).err()
    }

    /// The bundle verified: the last check before anything is written to a slot. A halt or
    /// freeze that came during the download stops the station here, the bundle kept.
    pub(super) fn verified(&mut self, bundle_id: BundleId) {
        let job = match &self.next.engine.phase {
            Phase::Verifying { job, .. } if job.bundle_id == bundle_id => job.clone(),
            _ => {
                self.feed(Event::BundleVerified { bundle_id });
                return;
            }
        };
        if let Some(reason) = self.install_gate(&job) {
            if self.next.held_install.as_ref() != Some(&reason) {
                self.next.held_install = Some(reason.clone());
                self.report_held(job.update_id.clone(), Some(job.sequence), reason);
            }
            return;
        }
        if self.next.held_install.take().is_some() {
            self.report(Report::OfferReleased {
                update_id: job.update_id.clone(),
            });
        }
        self.feed(Event::BundleVerified { bundle_id });
    }

    /// Looks again at what controls hold back, after the controls or the trusted keys changed.
    pub(super) fn reconsider(&mut self) {
        if self.next.held_install.is_some() {
            match &self.next.engine.phase {
                Phase::Verifying { job, .. } => {
                    let id = job.bundle_id;
                    self.verified(id);
                }
                _ => self.next.held_install = None,
            }
        }
        let held: Vec<(String, SignedOffer)> = self
            .next
            .held_offers
            .iter()
            .map(|(t, h)| (t.clone(), h.signed.clone()))
            .collect();
        for (topic, signed) in held {
            self.next.seen_offers.insert(topic.clone(), signed.digest);
            self.judge_offer(topic, Ok(signed));
        }
        self.actions.push(Action::PublishState);
    }

    /// Offers refused as busy go to the engine again once it is idle on its committed slot.
    pub(super) fn retry_busy_offers(&mut self) {
        let engine = &self.next.engine;
        if self.next.busy_offers.is_empty()
            || engine.phase.job().is_some()
            || engine.booted != engine.committed
        {
            return;
        }
        let pending = std::mem::take(&mut self.next.busy_offers);
        for (topic, signed) in pending {
            self.next.seen_offers.insert(topic.clone(), signed.digest);
            self.judge_offer(topic, Ok(signed));
        }
    }
}

/// True when `offer` is the accepted offer this station acted on last: same sequence as the
/// last accepted one, and the update in progress or the one that ended last.
fn already_handled(state: &State, offer: &Offer) -> bool {
    if state.last_sequence != Some(offer.sequence) {
        return false;
    }
    if let Some(job) = state.phase.job() {
        return job.update_id == offer.update_id && job.bundle_id == offer.bundle_id;
    }
    let last = match &state.last_outcome {
        Some(
            Outcome::Committed { update_id, .. }
            | Outcome::RolledBack { update_id, .. }
            | Outcome::Failed { update_id, .. }
            | Outcome::Superseded { update_id, .. },
        ) => Some(update_id),
        _ => None,
    };
    last == Some(&offer.update_id)
}
