//! An operator publishing signed bundles and offers with `fleet-proto` directly.
use std::time::Duration;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, UpdateId};
use fleet_core::update::{Downgrade, Offer, RolloutPercent, Target};
use fleet_mqtt::{Backoff, Session, SessionConfig, SessionEvent};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::BundleManifest;
use fleet_proto::{Limits, chunk, topic};
use tokio::sync::mpsc::Receiver;

use crate::Mosquitto;

/// An MQTT client with a signing key.
#[derive(Debug)]
pub struct Operator {
    key: SigningKey,
    session: Session,
    _events: Receiver<SessionEvent>,
}

/// A deterministic test signing key from a one-byte seed.
#[must_use]
pub fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public key in the form station configs take (64 hex digits).
#[must_use]
pub fn public_hex(key: &SigningKey) -> String {
    key.verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Operator {
    /// Connects to `broker` as `name`, signing with `key`.
    pub async fn connect(broker: &Mosquitto, name: &str, key: SigningKey) -> anyhow::Result<Self> {
        let mut cfg = SessionConfig::new(name, broker.host(), broker.port());
        cfg.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        let (session, mut events) = Session::start(cfg);
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = events.recv().await {
                if e == SessionEvent::Connected {
                    return Ok(());
                }
            }
            bail!("session ended before connecting")
        })
        .await
        .context("operator did not connect within 10 s")??;
        Ok(Self {
            key,
            session,
            _events: events,
        })
    }

    #[must_use]
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    #[must_use]
    pub fn public_hex(&self) -> String {
        public_hex(&self.key)
    }

    /// Publishes raw bytes.
    pub async fn publish_raw(
        &self,
        topic: &str,
        bytes: Vec<u8>,
        retain: bool,
    ) -> anyhow::Result<()> {
        self.session
            .publish(topic, bytes, retain)
            .await
            .with_context(|| format!("unable to publish to {topic}"))
    }

    /// Describes `bundle` (not published).
    pub fn manifest(
        &self,
        bundle: &[u8],
        compatible: &str,
        version: &semver::Version,
        chunk_size: u32,
    ) -> anyhow::Result<BundleManifest> {
        Ok(chunk::build_manifest(
            bundle,
            chunk_size,
            compatible,
            version.clone(),
            "bundle.raucb",
            &Limits::DEFAULT,
        )?)
    }

    /// Publishes the chunks `range` of `bundle` retained.
    pub async fn publish_chunks(
        &self,
        manifest: &BundleManifest,
        bundle: &[u8],
        range: std::ops::Range<u32>,
    ) -> anyhow::Result<()> {
        for (i, c) in chunk::split(bundle, manifest.chunk_size).enumerate() {
            let i = u32::try_from(i)?;
            if range.contains(&i) {
                self.publish_raw(
                    &topic::bundle_chunk(&manifest.bundle_id, i),
                    c.to_vec(),
                    true,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Signs and publishes `manifest` retained (with `key`, or the operator's own).
    pub async fn publish_manifest(
        &self,
        manifest: &BundleManifest,
        key: Option<&SigningKey>,
    ) -> anyhow::Result<()> {
        let sealed = envelope::seal_json(Kind::Manifest, manifest, key.unwrap_or(&self.key))?;
        self.publish_raw(&topic::bundle_manifest(&manifest.bundle_id), sealed, true)
            .await
    }

    /// Publishes a whole bundle: every chunk retained, then the signed manifest.
    pub async fn publish_bundle(
        &self,
        bundle: &[u8],
        compatible: &str,
        version: &semver::Version,
        chunk_size: u32,
    ) -> anyhow::Result<BundleManifest> {
        let m = self.manifest(bundle, compatible, version, chunk_size)?;
        self.publish_chunks(&m, bundle, 0..m.chunk_count()).await?;
        self.publish_manifest(&m, None).await?;
        Ok(m)
    }

    /// Signs `offer` (with `key`, or the operator's own) and publishes it retained on its
    /// target's offer topic (or `topic` when given).
    pub async fn publish_offer(
        &self,
        offer: &Offer,
        key: Option<&SigningKey>,
        topic_override: Option<&str>,
    ) -> anyhow::Result<()> {
        let sealed = envelope::seal_json(Kind::Offer, offer, key.unwrap_or(&self.key))?;
        let t = match (topic_override, &offer.target) {
            (Some(t), _) => t.to_owned(),
            (None, Target::Device(d)) => topic::device_offer(d),
            (None, Target::Group(g)) => topic::group_offer(g),
        };
        self.publish_raw(&t, sealed, true).await
    }
}

/// An offer for `manifest` to one device, everyone in the wave, no expiry.
pub fn offer_to_device(
    device: &str,
    update: &str,
    sequence: u64,
    manifest: &BundleManifest,
) -> anyhow::Result<Offer> {
    offer(
        Target::Device(DeviceId::new(device)?),
        update,
        sequence,
        manifest,
    )
}

/// An offer for `manifest` to a group.
pub fn offer_to_group(
    group: &str,
    update: &str,
    sequence: u64,
    manifest: &BundleManifest,
) -> anyhow::Result<Offer> {
    offer(
        Target::Group(GroupId::new(group)?),
        update,
        sequence,
        manifest,
    )
}

fn offer(target: Target, update: &str, sequence: u64, m: &BundleManifest) -> anyhow::Result<Offer> {
    Ok(Offer {
        update_id: UpdateId::new(update)?,
        sequence,
        bundle_id: m.bundle_id,
        bundle_size: m.size,
        compatible: m.compatible.clone(),
        version: m.version.clone(),
        downgrade: Downgrade::Refuse,
        target,
        rollout_percent: RolloutPercent::ALL,
        issued_at: 1_700_000_000,
        expires_at: None,
        manifest_hash: None,
    })
}
