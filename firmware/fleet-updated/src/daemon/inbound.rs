//! MQTT messages to station inputs: the envelope is opened here (`fleet-proto` checks the
//! signature against the trusted keys), everything else is the station's call.
use fleet_core::ports::{BootControl, Installer};
use fleet_core::rollout::{Control, Scope};
use std::time::Duration;

use fleet_core::station::{Input, MAX_REFUSAL_DETAIL, MessageDigest, SignedOffer, Unreadable};
use fleet_core::trust::RotationReject;
use fleet_core::update::RejectReason;
use fleet_mqtt::Message;
use fleet_proto::envelope::{self, Kind};
use fleet_proto::rollout::parse_control_topic;
use fleet_proto::trust::{KEY_ROTATION_TOPIC, open_rotation};
use fleet_proto::{Offer, Topic};
use sha2::Digest;

use crate::daemon::{HealthCheck, RunError, Shell};

fn digest(bytes: &[u8]) -> MessageDigest {
    sha2::Sha256::digest(bytes).into()
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    pub(super) async fn on_message(&mut self, m: Message) -> Result<(), RunError> {
        if let Some(applier) = &self.config_push
            && fleet_proto::config_push::parse_config_topic(&m.topic).is_some()
        {
            applier.offer(&m.topic, m.payload.to_vec(), self.trusted.clone());
            return Ok(());
        }
        if m.topic == KEY_ROTATION_TOPIC {
            return match self.rotation_input(&m) {
                Some(input) => self.feed(input).await,
                None => Ok(()),
            };
        }
        if let Some(scope) = parse_control_topic(&m.topic) {
            return match self.control_input(&m, scope) {
                Some(input) => self.feed(input).await,
                None => Ok(()),
            };
        }
        if let Some((bundle_id, base_id)) = fleet_proto::delta::parse_delta_topic(&m.topic) {
            return self
                .on_delta_description(bundle_id, base_id, &m.payload)
                .await;
        }
        if let Some(bundle_id) = fleet_proto::delta::parse_compressed_topic(&m.topic) {
            return self.on_compressed_description(bundle_id, &m.payload).await;
        }
        let Ok(topic) = Topic::parse(&m.topic) else {
            tracing::debug!(topic = %m.topic, "message on a topic this station does not read");
            return Ok(());
        };
        match topic {
            Topic::DeviceOffer(_) | Topic::GroupOffer(_) => {
                let input = self.offer_input(&m);
                self.feed(input).await
            }
            Topic::BundleManifest(id) => self.on_manifest(id, &m.payload).await,
            Topic::BundleChunk { bundle_id, index } => {
                self.on_chunk(bundle_id, index, m.payload).await
            }
            _ => Ok(()),
        }
    }

    /// The session skipped `topic`: its retained message (`size` bytes) is above the transport
    /// ceiling and was never read. The station refuses it on its topic as `too-large`.
    pub(super) async fn on_skipped(
        &mut self,
        topic: &str,
        size: usize,
        strikes: u32,
        retry_in: Duration,
    ) -> Result<(), RunError> {
        let size = size as u64;
        tracing::warn!(
            topic,
            size,
            strikes,
            retry_in_ms = retry_in.as_millis() as u64,
            "message above the transport ceiling refused as too-large"
        );
        let on = if topic == KEY_ROTATION_TOPIC {
            (Unreadable::Rotation, Kind::KeyRotation)
        } else if let Some(topic_scope) = parse_control_topic(topic) {
            (Unreadable::Control { topic_scope }, Kind::Control)
        } else {
            match Topic::parse(topic) {
                Ok(Topic::DeviceOffer(_) | Topic::GroupOffer(_)) => (
                    Unreadable::Offer {
                        topic: topic.to_owned(),
                    },
                    Kind::Offer,
                ),
                Ok(Topic::BundleManifest(id)) => {
                    return self.on_manifest_unreadable(id, size).await;
                }
                // A chunk is fetched again, then the transfer stalls (`stalled`).
                _ => return Ok(()),
            }
        };
        let (on, kind) = on;
        let limit = self.limits.max_envelope_bytes(kind) as u64;
        self.feed(Input::Unreadable { on, size, limit }).await
    }

    fn offer_input(&self, m: &Message) -> Input {
        if m.payload.is_empty() {
            // A cleared retained offer (`fleetctl clear`).
            return Input::OfferRetracted {
                topic: m.topic.clone(),
            };
        }
        let digest = digest(&m.payload);
        match envelope::open_json::<Offer>(&m.payload, Kind::Offer, &self.trusted, &self.limits) {
            Ok(opened) => Input::Offer {
                topic: m.topic.clone(),
                signed: SignedOffer {
                    offer: opened.value,
                    key_id: opened.key_id,
                    digest,
                },
            },
            Err(e) => {
                tracing::warn!(topic = %m.topic, error = %e, "offer refused");
                Input::OfferUnusable {
                    topic: m.topic.clone(),
                    digest,
                    reason: e.reject_reason(),
                }
            }
        }
    }

    fn control_input(&self, m: &Message, topic_scope: Scope) -> Option<Input> {
        if m.payload.is_empty() {
            // A cleared retained topic changes nothing: controls are lifted by a newer message.
            tracing::debug!(topic = %m.topic, "control topic cleared");
            return None;
        }
        Some(
            match envelope::open_json::<Control>(
                &m.payload,
                Kind::Control,
                &self.trusted,
                &self.limits,
            ) {
                Ok(o) => Input::Control {
                    topic: m.topic.clone(),
                    topic_scope,
                    control: o.value,
                },
                Err(e) => {
                    tracing::warn!(topic = %m.topic, error = %e, "control refused");
                    Input::ControlUnusable {
                        topic_scope,
                        reason: e.reject_reason(),
                    }
                }
            },
        )
    }

    fn rotation_input(&self, m: &Message) -> Option<Input> {
        if m.payload.is_empty() {
            return None;
        }
        let digest = digest(&m.payload);
        Some(
            match open_rotation(&m.payload, &self.trusted, &self.limits) {
                Ok(o) => Input::Rotation {
                    digest,
                    rotation: o.value,
                    signer: o.key_id,
                },
                Err(e) => {
                    let reason = match e.reject_reason() {
                        RejectReason::UnknownKey { key_id } => {
                            RotationReject::UnknownKey { key_id }
                        }
                        RejectReason::RevokedKey { key_id } => {
                            RotationReject::RevokedKey { key_id }
                        }
                        RejectReason::TooLarge { size, limit } => {
                            RotationReject::TooLarge { size, limit }
                        }
                        _ => RotationReject::InvalidRotation {
                            detail: fleet_core::update::offer::truncate(
                                &e.to_string(),
                                MAX_REFUSAL_DETAIL,
                            ),
                        },
                    };
                    tracing::warn!(?reason, "key rotation refused");
                    Input::RotationUnusable { digest, reason }
                }
            },
        )
    }
}
