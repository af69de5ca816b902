//! Operator signals at the station level: control messages and key rotations.
use crate::rollout::{Control, ControlRefused, Scope, accept_control};
use crate::station::{
    Action, MAX_REFUSAL_DETAIL, MessageDigest, Run, Store, Unreadable, unreadable_digest,
};
use crate::trust::{Rotation, RotationReject, decide_rotation};
use crate::update::offer::truncate;
use crate::update::{KeyId, PublicKey, RejectReason, Report};

impl Run {
    /// A message the station cannot read at all: refused as `too-large` on its topic.
    pub(super) fn on_unreadable(&mut self, on: Unreadable, size: u64, limit: u64) {
        let digest = unreadable_digest(size);
        match on {
            Unreadable::Offer { topic } => {
                self.on_offer(topic, digest, Err(RejectReason::TooLarge { size, limit }));
            }
            Unreadable::Control { topic_scope } => {
                self.refuse_control(
                    Some(topic_scope),
                    None,
                    RejectReason::TooLarge { size, limit },
                );
            }
            Unreadable::Rotation => {
                self.on_rotation(digest, Err(RotationReject::TooLarge { size, limit }));
            }
        }
    }

    /// Reports a refused control message; nothing changes.
    pub(super) fn refuse_control(
        &mut self,
        scope: Option<Scope>,
        sequence: Option<u64>,
        reason: RejectReason,
    ) {
        self.report(Report::ControlRefused {
            scope,
            sequence,
            reason,
        });
    }

    /// A verified control message on the topic of `topic_scope`.
    pub(super) fn on_control(&mut self, topic: String, topic_scope: Scope, control: Control) {
        if self.next.controls.get(&topic) == Some(&control) {
            // The retained control in force, again (every reconnect and restart).
            return;
        }
        if control.scope != topic_scope {
            let detail = format!(
                "control for {:?} published on the topic of {:?}",
                control.scope, topic_scope
            );
            self.refuse_control(
                Some(topic_scope),
                Some(control.sequence),
                RejectReason::Malformed {
                    detail: truncate(&detail, MAX_REFUSAL_DETAIL),
                },
            );
            return;
        }
        let last = self.next.controls.get(&topic).map(|c| c.sequence);
        if let Err(e) = accept_control(&self.next.engine.station, last, &control) {
            let reason = match e {
                ControlRefused::NotForThisStation => RejectReason::NotForThisStation,
                ControlRefused::Replayed { sequence, last } => RejectReason::Replayed {
                    sequence,
                    last_accepted: last,
                },
                other => RejectReason::Malformed {
                    detail: other.to_string(),
                },
            };
            self.refuse_control(Some(control.scope), Some(control.sequence), reason);
            return;
        }
        let (scope, sequence) = (control.scope.clone(), control.sequence);
        self.next.controls.insert(topic, control);
        // Persisted before it takes effect (a restart must obey it too).
        self.actions.push(Action::Save(Store::Controls));
        self.report(Report::ControlAccepted { scope, sequence });
        self.reconsider();
    }

    /// A message on the rotation topic: opened (`Ok`) or refused by the envelope (`Err`).
    pub(super) fn on_rotation(
        &mut self,
        digest: MessageDigest,
        opened: Result<(Rotation, KeyId), RotationReject>,
    ) {
        if self.next.applied_rotation == Some(digest) || self.next.seen_rotation == Some(digest) {
            return;
        }
        self.next.seen_rotation = Some(digest);
        let (rotation, signer) = match opened {
            Ok(o) => o,
            Err(reason) => {
                self.report(Report::RotationRefused {
                    sequence: None,
                    reason,
                });
                return;
            }
        };
        let sequence = rotation.sequence;
        let rotated = match decide_rotation(&self.next.trust, &rotation, signer) {
            Ok(r) => r,
            Err(reason) => {
                self.report(Report::RotationRefused {
                    sequence: Some(sequence),
                    reason,
                });
                return;
            }
        };
        self.next.trust = rotated.next;
        self.next.applied_rotation = Some(digest);
        // Persisted before anything is verified with it.
        self.actions.push(Action::Save(Store::Trust));
        let keys = self.next.trust.keys().map(PublicKey::key_id).collect();
        self.report(Report::KeysRotated {
            sequence,
            keys,
            added: rotated.added,
            retired: rotated.retired,
            revoked: rotated.revoked,
        });
        // Offers held back were verified with the old set: judge them again.
        self.reconsider();
    }
}
