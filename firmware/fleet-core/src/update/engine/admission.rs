//! Offers reaching the engine: admitted (here, or by the station before) and taken up when
//! the station is free for them.
use crate::time::Now;
use crate::update::engine::{Action, Job, Phase, State};
use crate::update::offer::{Admitted, Offer, RejectReason, SignatureVerdict, decide_offer};
use crate::update::report::{Outcome, Report};

pub(super) fn on_offer(
    next: &mut State,
    offer: &Offer,
    verdict: SignatureVerdict,
    now: Now,
    actions: &mut Vec<Action>,
) {
    match decide_offer(&next.admission(), offer, verdict, now) {
        Ok(admitted) => on_admitted(next, offer, admitted, actions),
        Err(reason) => actions.push(Action::Report(Report::OfferRejected {
            update_id: Some(offer.update_id.clone()),
            sequence: Some(offer.sequence),
            reason,
        })),
    }
}

/// An admitted offer: taken up when the station is free for it, else refused as busy.
pub(super) fn on_admitted(
    next: &mut State,
    offer: &Offer,
    admitted: Admitted,
    actions: &mut Vec<Action>,
) {
    let rejected = |reason: RejectReason| {
        Action::Report(Report::OfferRejected {
            update_id: Some(offer.update_id.clone()),
            sequence: Some(offer.sequence),
            reason,
        })
    };
    // Admission ran against this state; a replay guard stays here all the same, so no input
    // order can make the engine accept a sequence twice.
    if let Some(last) = next.last_sequence
        && offer.sequence <= last
    {
        actions.push(rejected(RejectReason::Replayed {
            sequence: offer.sequence,
            last_accepted: last,
        }));
        return;
    }
    if next.booted != next.committed {
        actions.push(rejected(RejectReason::Busy {
            phase: next.phase.name(),
        }));
        return;
    }
    let current = match &next.phase {
        Phase::Idle => None,
        Phase::Downloading { job, .. } | Phase::Verifying { job, .. } => Some(job.clone()),
        other => {
            actions.push(rejected(RejectReason::Busy {
                phase: other.name(),
            }));
            return;
        }
    };
    next.last_sequence = Some(offer.sequence);
    if let Some(cur) = &current
        && cur.update_id == offer.update_id
        && cur.bundle_id == offer.bundle_id
        && cur.version == offer.version
        && cur.bundle_size == offer.bundle_size
    {
        // Same update re-signed (a wider wave, a later expiry): carry on.
        actions.push(Action::Report(Report::OfferRenewed {
            update_id: offer.update_id.clone(),
            sequence: offer.sequence,
        }));
        let renewed = |job: &Job| Job {
            sequence: offer.sequence,
            key_id: admitted.key_id,
            manifest_hash: offer.manifest_hash,
            ..job.clone()
        };
        next.phase = match &next.phase {
            Phase::Downloading { job, held_bytes } => Phase::Downloading {
                job: renewed(job),
                held_bytes: *held_bytes,
            },
            Phase::Verifying {
                job,
                install_attempts,
            } => Phase::Verifying {
                job: renewed(job),
                install_attempts: *install_attempts,
            },
            other => other.clone(),
        };
        return;
    }
    if let Some(cur) = current {
        actions.push(Action::Report(Report::Superseded {
            update_id: cur.update_id.clone(),
            by: offer.update_id.clone(),
        }));
        if cur.bundle_id != offer.bundle_id {
            actions.push(Action::DiscardDownload {
                bundle_id: cur.bundle_id,
            });
        }
        next.last_outcome = Some(Outcome::Superseded {
            update_id: cur.update_id,
            by: offer.update_id.clone(),
        });
    }
    let job = Job::from_offer(offer, admitted.key_id);
    actions.push(Action::Report(Report::OfferAccepted {
        update_id: job.update_id.clone(),
        sequence: job.sequence,
        version: job.version.clone(),
        key_id: job.key_id,
        expiry_checked: admitted.expiry_checked,
    }));
    actions.push(Action::Report(Report::DownloadStarted {
        bundle_id: job.bundle_id,
        size: job.bundle_size,
        resumed: false,
        held_bytes: 0,
    }));
    actions.push(Action::Download {
        bundle_id: job.bundle_id,
        size: job.bundle_size,
        version: job.version.clone(),
        resume: false,
    });
    next.phase = Phase::Downloading { job, held_bytes: 0 };
}
