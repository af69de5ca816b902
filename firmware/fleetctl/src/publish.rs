//! `push` and `clear`: bundles and offers on the broker, with no server process.
//!
//! A push publishes, all retained and QoS 1: the signed manifest on
//! `fleet/v1/bundles/{id}/manifest`, every chunk on `fleet/v1/bundles/{id}/chunks/{i}`, and
//! only when the broker acknowledged all of them the signed offer on the target's offer topic.
//! The manifest goes first so that any chunk on the broker is reachable from a manifest (what
//! `clear` relies on); stations only look at a bundle once an offer names it.
//!
//! Re-pushing the same bundle with the same parameters is idempotent: the manifest envelope is
//! byte-identical (ed25519 signatures are deterministic), the chunks are the same bytes on the
//! same topics, and the current offer is kept (same sequence) instead of being re-signed.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleet_core::ids::{UpdateId, Version};
use fleet_core::update::{BundleId, Downgrade, Offer, RolloutPercent};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::topic::{self, Topic};
use fleet_proto::{BundleManifest, Limits};
use sha2::{Digest as _, Sha256};

use crate::clock::unix_now;
use crate::connection::{BrokerAddr, Connection, ConnectionError, Message, collect_retained};
use crate::delta::{DeltaError, DeltaReport, Published, bases_in_dir, make_compressed, make_patch};
use crate::target::Target;
use fleet_proto::delta::{
    CompressedDescription, CompressedFormat, DeltaDescription, DeltaFormat, compressed_topic,
    delta_topic,
};

/// Chunks published but not yet acknowledged, at most (bounds memory to a few MiB).
const PUBLISH_WINDOW: u64 = 16;
/// How long the broker may take to acknowledge what was sent.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Silence after the read marker after which a fresh subscription has delivered its retained
/// messages (see [`collect_retained`]).
pub const RETAINED_QUIET: Duration = Duration::from_millis(200);
/// Most retained messages one discovery read takes in.
const MAX_DISCOVERED: usize = 100_000;

/// Why a push or clear failed. [`PublishError::is_invalid_input`] separates what the operator
/// can fix in the command line from broker and I/O trouble.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unable to read bundle {path}")]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to push bundle {path}: it is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("unable to push bundle {path}: it is empty")]
    EmptyBundle { path: PathBuf },
    #[error("unable to push bundle {path}: {size} bytes is above the limit of {limit} bytes")]
    BundleTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "unable to push bundle {path}: its file name must be 1..=128 characters of [A-Za-z0-9._-], not starting with '.'"
    )]
    BadFileName { path: PathBuf },
    #[error("unable to describe bundle {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "unable to push bundle {path}: it changed while it was being published (chunk {index})"
    )]
    BundleChanged { path: PathBuf, index: u32 },
    #[error(
        "unable to use sequence {requested}: stations already saw {highest}; use a higher one or leave --sequence out"
    )]
    SequenceTooLow { requested: u64, highest: u64 },
    #[error("unable to pick a sequence: the highest seen is {0}, nothing is above it")]
    SequenceExhausted(u64),
    /// A base could not be read or its patch made (`--delta-from`, `--delta-dir`).
    #[error(transparent)]
    Delta(#[from] DeltaError),
    #[error("unable to compute the expiry: {0}")]
    Expiry(String),
    #[error("unable to clear bundle {bundle_id}: offers on {topics:?} still use it (add --force)")]
    StillOffered {
        bundle_id: BundleId,
        topics: Vec<String>,
    },
    #[error(transparent)]
    Broker(#[from] ConnectionError),
}

impl PublishError {
    /// True when the operator's input is at fault (exit code 2).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        !matches!(
            self,
            PublishError::Broker(_) | PublishError::BundleChanged { .. }
        )
    }
}

/// What to push.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub bundle: PathBuf,
    pub target: Target,
    pub percent: RolloutPercent,
    pub version: Version,
    pub compatible: String,
    /// `None`: one above the highest sequence on the broker.
    pub sequence: Option<u64>,
    pub expires_in: Option<Duration>,
    pub downgrade: Downgrade,
    /// `None`: derived from the version and the bundle id (stable across re-pushes, so a
    /// wider wave keeps every station's bucket).
    pub update_id: Option<UpdateId>,
    pub chunk_size: u32,
    pub limits: Limits,
    /// Publish a delta from each of these bundle files (`--delta-from`).
    pub delta_from: Vec<PathBuf>,
    /// Publish a delta from every base the fleet's stations keep (their retained states'
    /// `kept-base`) whose bundle file is in this directory (`--delta-dir`).
    pub delta_dir: Option<PathBuf>,
    /// Also publish the bundle zstd-compressed (ADR 0012; `--no-compress` turns it off). The
    /// raw bundle is published either way.
    pub compress: bool,
}

impl PushRequest {
    /// A request with the defaults: 100 %, refuse downgrades, auto sequence, default chunk
    /// size and limits.
    #[must_use]
    pub fn new(bundle: PathBuf, target: Target, version: Version, compatible: String) -> Self {
        Self {
            bundle,
            target,
            percent: RolloutPercent::ALL,
            version,
            compatible,
            sequence: None,
            expires_in: None,
            downgrade: Downgrade::Refuse,
            update_id: None,
            chunk_size: fleet_proto::DEFAULT_CHUNK_SIZE,
            limits: Limits::DEFAULT,
            delta_from: Vec::new(),
            delta_dir: None,
            compress: true,
        }
    }
}

/// Progress of a push, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushProgress {
    /// The bundle is hashed; publishing starts.
    Described {
        bundle_id: BundleId,
        size: u64,
        chunks: u32,
    },
    /// Bytes of chunks the broker acknowledged.
    Chunks { acked_bytes: u64, total_bytes: u64 },
    /// Bytes of the bundle compressed so far.
    Compressing { read_bytes: u64, total_bytes: u64 },
    /// The compressed bundle is on the broker (its chunks included).
    Compressed { file_size: u64, bundle_size: u64 },
    /// A delta from `base_id` is on the broker (its patch's chunks included).
    Delta {
        base_id: BundleId,
        patch_size: u64,
        bundle_size: u64,
    },
    /// The offer went out (or the identical current one was kept).
    Offer {
        topic: String,
        sequence: u64,
        kept: bool,
    },
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub bundle_id: BundleId,
    pub size: u64,
    pub chunks: u32,
    pub manifest_topic: String,
    pub offer_topic: String,
    pub update_id: UpdateId,
    pub sequence: u64,
    /// True when the identical offer was already current and was left in place.
    pub offer_kept: bool,
    /// The compressed bundle published next to the raw one (none with `--no-compress`).
    pub compressed: Option<CompressedReport>,
    /// The deltas published next to the bundle.
    pub deltas: Vec<DeltaReport>,
    /// Bases stations keep (from their retained states) with no file in `--delta-dir`: those
    /// stations fetch the full bundle.
    pub bases_without_file: Vec<BundleId>,
}

/// The compressed bundle a push published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedReport {
    pub file_id: BundleId,
    pub file_size: u64,
    pub bundle_size: u64,
    /// Where its description is: `fleet/v1/bundles/{bundle-id}/compressed`.
    pub topic: String,
}

/// Reads an offer envelope's payload without verifying it (the operator side only reads its
/// own publications back, to pick sequences and find bundles; stations verify everything).
#[must_use]
pub fn peek_offer(bytes: &[u8], limits: &Limits) -> Option<Offer> {
    envelope::read_unverified_json(bytes, Kind::Offer, limits).ok()
}

/// Reads a manifest envelope's payload without verifying it.
#[must_use]
pub fn peek_manifest(bytes: &[u8], limits: &Limits) -> Option<BundleManifest> {
    envelope::read_unverified_json(bytes, Kind::Manifest, limits).ok()
}

/// The offer topic of a target.
#[must_use]
pub fn offer_topic(target: &Target) -> String {
    match target {
        Target::Device(d) => topic::device_offer(d),
        Target::Group(g) => topic::group_offer(g),
    }
}

fn core_target(target: &Target) -> fleet_core::update::Target {
    match target {
        Target::Device(d) => fleet_core::update::Target::Device(d.clone()),
        Target::Group(g) => fleet_core::update::Target::Group(g.clone()),
    }
}

/// The update id `push` derives: the version with `.`/`+` as `-`, then 8 hex digits of the
/// bundle id, e.g. `1-1-0-5a5a5a5a`.
#[must_use]
pub fn derived_update_id(version: &Version, bundle_id: &BundleId) -> UpdateId {
    let v: String = version
        .to_string()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    let id = format!("{v}-{}", &bundle_id.to_string()[..8]);
    UpdateId::new(id).expect("only [a-z0-9-], at most 57 bytes")
}

/// Offers and station states on the broker: what sequence comes next, and what each offer
/// topic holds now.
#[derive(Debug, Clone, Default)]
pub struct OfferBook {
    /// Offer topic -> the retained offer there (unverified read).
    pub offers: BTreeMap<String, Offer>,
    /// Offer topic -> the retained envelope bytes, to verify before relying on one.
    pub envelopes: BTreeMap<String, Vec<u8>>,
    /// The highest sequence in any retained offer or any station's `last-sequence`.
    pub highest_sequence: Option<u64>,
    /// Bundle id -> how many stations keep it as their delta base (`kept-base`).
    pub kept_bases: BTreeMap<BundleId, usize>,
}

impl OfferBook {
    /// Reads every retained offer and station state.
    pub async fn read(addr: &BrokerAddr, limits: &Limits) -> Result<Self, ConnectionError> {
        let filters = [
            "fleet/v1/devices/+/offer".to_owned(),
            "fleet/v1/groups/+/offer".to_owned(),
            topic::filter::ALL_STATES.to_owned(),
        ];
        let msgs = collect_retained(addr, &filters, RETAINED_QUIET, MAX_DISCOVERED).await?;
        Ok(Self::from_messages(&msgs, limits))
    }

    fn from_messages(msgs: &[Message], limits: &Limits) -> Self {
        let mut book = OfferBook::default();
        let mut bump = |s: u64| {
            book.highest_sequence = Some(book.highest_sequence.map_or(s, |h| h.max(s)));
        };
        let mut offers = BTreeMap::new();
        let mut envelopes = BTreeMap::new();
        let mut kept_bases: BTreeMap<BundleId, usize> = BTreeMap::new();
        for m in msgs {
            match Topic::parse(&m.topic) {
                Ok(Topic::DeviceOffer(_) | Topic::GroupOffer(_)) => {
                    if let Some(o) = peek_offer(&m.payload, limits) {
                        bump(o.sequence);
                        offers.insert(m.topic.clone(), o);
                        envelopes.insert(m.topic.clone(), m.payload.clone());
                    }
                }
                Ok(Topic::DeviceState(_)) => {
                    if let Ok(s) = fleet_proto::payload::decode_state(&m.payload, limits) {
                        if let Some(seq) = s.last_sequence {
                            bump(seq);
                        }
                        if let Some(base) = s.kept_base {
                            *kept_bases.entry(base).or_default() += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        book.offers = offers;
        book.envelopes = envelopes;
        book.kept_bases = kept_bases;
        book
    }

    /// Bundle id -> the offer topics that name it.
    #[must_use]
    pub fn referenced_bundles(&self) -> BTreeMap<BundleId, Vec<String>> {
        let mut out: BTreeMap<BundleId, Vec<String>> = BTreeMap::new();
        for (t, o) in &self.offers {
            out.entry(o.bundle_id).or_default().push(t.clone());
        }
        out
    }
}

/// True when `current` already says what `wanted` says (all but sequence and issue time).
fn same_offer(current: &Offer, wanted: &Offer) -> bool {
    current.update_id == wanted.update_id
        && current.bundle_id == wanted.bundle_id
        && current.bundle_size == wanted.bundle_size
        && current.compatible == wanted.compatible
        && current.version == wanted.version
        && current.downgrade == wanted.downgrade
        && current.target == wanted.target
        && current.rollout_percent == wanted.rollout_percent
        && current.expires_at.is_none()
        && wanted.expires_at.is_none()
        && current.manifest_hash == wanted.manifest_hash
}

fn check_file_name(path: &Path) -> Result<String, PublishError> {
    let bad = || PublishError::BadFileName {
        path: path.to_owned(),
    };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(name.to_owned()) } else { Err(bad()) }
}

/// Checks the bundle file and describes it (hashes every chunk). No broker needed.
pub fn describe_bundle(req: &PushRequest) -> Result<BundleManifest, PublishError> {
    let path = &req.bundle;
    let read_err = |source| PublishError::ReadBundle {
        path: path.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(PublishError::NotAFile { path: path.clone() });
    }
    if meta.len() == 0 {
        return Err(PublishError::EmptyBundle { path: path.clone() });
    }
    if meta.len() > req.limits.max_bundle_bytes {
        return Err(PublishError::BundleTooLarge {
            path: path.clone(),
            size: meta.len(),
            limit: req.limits.max_bundle_bytes,
        });
    }
    let file_name = check_file_name(path)?;
    let chunks = meta.len().div_ceil(u64::from(req.chunk_size.max(1)));
    if chunks > u64::from(req.limits.max_chunks) {
        return Err(PublishError::Manifest {
            path: path.clone(),
            reason: format!(
                "{chunks} chunks of {} bytes is above the limit of {} chunks: use a larger --chunk-size",
                req.chunk_size, req.limits.max_chunks
            ),
        });
    }
    let file = File::open(path).map_err(read_err)?;
    fleet_proto::chunk::build_manifest(
        file,
        req.chunk_size,
        &req.compatible,
        req.version.clone(),
        &file_name,
        &req.limits,
    )
    .map_err(|e| match e {
        fleet_proto::chunk::ChunkError::Read(source) => PublishError::ReadBundle {
            path: path.clone(),
            source,
        },
        other => PublishError::Manifest {
            path: path.clone(),
            reason: other.to_string(),
        },
    })
}

/// Publishes a bundle and its offer. `progress` is called as the broker acknowledges.
pub async fn push(
    addr: &BrokerAddr,
    key: &SigningKey,
    req: &PushRequest,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<PushReport, PublishError> {
    let manifest = describe_bundle(req)?;
    let bundle_id = manifest.bundle_id;
    let update_id = req
        .update_id
        .clone()
        .unwrap_or_else(|| derived_update_id(&req.version, &bundle_id));
    let expires_at = match req.expires_in {
        None => None,
        Some(d) => {
            let secs = i64::try_from(d.as_secs())
                .map_err(|_| PublishError::Expiry(format!("{d:?} is too long")))?;
            Some(
                unix_now()
                    .checked_add(secs)
                    .ok_or_else(|| PublishError::Expiry(format!("{d:?} is too long")))?,
            )
        }
    };

    // What is on the broker now: the sequence to use, and whether this offer is already out.
    let book = OfferBook::read(addr, &req.limits).await?;
    let offer_topic = offer_topic(&req.target);
    let mut offer = Offer {
        update_id: update_id.clone(),
        sequence: 0,
        bundle_id,
        bundle_size: manifest.size,
        compatible: req.compatible.clone(),
        version: req.version.clone(),
        downgrade: req.downgrade,
        target: core_target(&req.target),
        rollout_percent: req.percent,
        issued_at: unix_now(),
        expires_at,
        manifest_hash: None,
    };
    // Only an offer that verifies with this key may stand in for the one this push would sign.
    let ours: fleet_proto::TrustedKeys = [key.verifying_key()].into_iter().collect();
    let current = book.offers.get(&offer_topic).filter(|_| {
        book.envelopes.get(&offer_topic).is_some_and(|bytes| {
            envelope::open_json::<Offer>(bytes, Kind::Offer, &ours, &req.limits).is_ok()
        })
    });
    let keep = match (req.sequence, current) {
        (None, Some(c)) if same_offer(c, &offer) => Some(c.sequence),
        (Some(s), Some(c)) if s == c.sequence && same_offer(c, &offer) => Some(s),
        _ => None,
    };
    offer.sequence = match (keep, req.sequence, book.highest_sequence) {
        (Some(s), _, _) => s,
        (None, Some(s), Some(h)) if s <= h => {
            return Err(PublishError::SequenceTooLow {
                requested: s,
                highest: h,
            });
        }
        (None, Some(s), _) => s,
        (None, None, Some(h)) => h.checked_add(1).ok_or(PublishError::SequenceExhausted(h))?,
        (None, None, None) => 1,
    };

    progress(PushProgress::Described {
        bundle_id,
        size: manifest.size,
        chunks: manifest.chunk_count(),
    });

    let mut conn = Connection::open(addr, "fleetctl-push", Duration::from_secs(10)).await?;
    let manifest_topic = topic::bundle_manifest(&bundle_id);
    let sealed = envelope::seal_json(Kind::Manifest, &manifest, key).map_err(|e| {
        PublishError::Manifest {
            path: req.bundle.clone(),
            reason: e.to_string(),
        }
    })?;
    conn.publish(&manifest_topic, sealed, true).await?;
    conn.flush(ACK_TIMEOUT).await?;

    publish_chunks(&mut conn, &req.bundle, &manifest, progress).await?;

    // The compressed bundle, complete on the broker before the offer names the bundle.
    let compressed = if req.compress {
        publish_compressed(&mut conn, key, req, &manifest, progress).await?
    } else {
        None
    };

    // Deltas from the bases asked for, each complete on the broker before the offer names
    // the bundle (ADR 0012).
    let deltas = publish_deltas(&mut conn, key, req, &manifest, &book, progress).await?;

    let kept = keep.is_some();
    if !kept {
        let sealed =
            envelope::seal_json(Kind::Offer, &offer, key).map_err(|e| PublishError::Manifest {
                path: req.bundle.clone(),
                reason: e.to_string(),
            })?;
        conn.publish(&offer_topic, sealed, true).await?;
    }
    conn.close(ACK_TIMEOUT).await?;
    progress(PushProgress::Offer {
        topic: offer_topic.clone(),
        sequence: offer.sequence,
        kept,
    });
    Ok(PushReport {
        bundle_id,
        size: manifest.size,
        chunks: manifest.chunk_count(),
        manifest_topic,
        offer_topic,
        update_id,
        sequence: offer.sequence,
        offer_kept: kept,
        compressed,
        deltas: deltas.published,
        bases_without_file: deltas.bases_without_file,
    })
}

/// Compresses the bundle (`crate::delta::make_compressed`) and publishes the file's signed
/// manifest, its chunks and then its signed description; publishes nothing when the file
/// saves less than [`crate::delta::MIN_COMPRESSED_SAVING_PERCENT`] of the bundle (a bundle of
/// compressed squashfs, or of incompressible data).
///
/// # Errors
/// The bundle cannot be read or compressed, or the broker fails.
async fn publish_compressed(
    conn: &mut Connection,
    key: &SigningKey,
    req: &PushRequest,
    bundle: &BundleManifest,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<Option<CompressedReport>, PublishError> {
    let work = tempfile::tempdir().map_err(|source| DeltaError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    let made = make_compressed(&req.bundle, work.path(), &mut |read_bytes, total_bytes| {
        progress(PushProgress::Compressing {
            read_bytes,
            total_bytes,
        });
    })?;
    if !crate::delta::compression_pays(made.file_size, bundle.size) {
        return Ok(None);
    }
    let file_req = PushRequest {
        bundle: made.path.clone(),
        ..req.clone()
    };
    let manifest = describe_bundle(&file_req)?;
    if manifest.bundle_id != made.file_id {
        return Err(PublishError::BundleChanged {
            path: made.path.clone(),
            index: 0,
        });
    }
    let description = CompressedDescription {
        bundle_id: bundle.bundle_id,
        bundle_size: bundle.size,
        file_id: made.file_id,
        file_size: made.file_size,
        format: CompressedFormat::Zstd,
        window_log: made.window_log,
    };
    description
        .validate(&req.limits)
        .map_err(|e| DeltaError::MakePatch {
            path: req.bundle.clone(),
            reason: e.to_string(),
        })?;
    let seal_err = |e: serde_json::Error| PublishError::Manifest {
        path: made.path.clone(),
        reason: e.to_string(),
    };
    let sealed = envelope::seal_json(Kind::Manifest, &manifest, key).map_err(seal_err)?;
    conn.publish(&topic::bundle_manifest(&made.file_id), sealed, true)
        .await?;
    publish_chunks(conn, &made.path, &manifest, &mut |_| {}).await?;
    let topic = compressed_topic(&bundle.bundle_id);
    let sealed = envelope::seal_json(Kind::Compressed, &description, key).map_err(seal_err)?;
    conn.publish(&topic, sealed, true).await?;
    conn.flush(ACK_TIMEOUT).await?;
    progress(PushProgress::Compressed {
        file_size: made.file_size,
        bundle_size: bundle.size,
    });
    Ok(Some(CompressedReport {
        file_id: made.file_id,
        file_size: made.file_size,
        bundle_size: bundle.size,
        topic,
    }))
}

/// Makes (`crate::delta`) and publishes the deltas `req` asks for (none when it asks for none).
///
/// # Errors
/// A base cannot be read, a patch cannot be made, or the broker fails.
async fn publish_deltas(
    conn: &mut Connection,
    key: &SigningKey,
    req: &PushRequest,
    bundle: &BundleManifest,
    book: &OfferBook,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<Published, PublishError> {
    let mut out = Published::default();
    let mut bases: BTreeMap<BundleId, PathBuf> = BTreeMap::new();
    for path in &req.delta_from {
        let id = sha256_file(path)
            .map_err(|source| DeltaError::Read {
                path: path.clone(),
                source,
            })?
            .parse::<BundleId>()
            .map_err(|e| DeltaError::MakePatch {
                path: path.clone(),
                reason: format!("{e:?}"),
            })?;
        bases.insert(id, path.clone());
    }
    if let Some(dir) = &req.delta_dir {
        let wanted: BTreeSet<BundleId> = book.kept_bases.keys().copied().collect();
        let found = bases_in_dir(dir, &wanted)?;
        out.bases_without_file = wanted
            .iter()
            .filter(|id| !found.contains_key(id) && **id != bundle.bundle_id)
            .copied()
            .collect();
        bases.extend(found);
    }
    // A station that keeps the pushed bundle already needs nothing.
    bases.remove(&bundle.bundle_id);
    if bases.is_empty() {
        return Ok(out);
    }
    let work = tempfile::tempdir().map_err(|source| DeltaError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    for (_, base) in bases {
        let made = make_patch(&base, &req.bundle, work.path())?;
        let patch_req = PushRequest {
            bundle: made.path.clone(),
            ..req.clone()
        };
        let manifest = describe_bundle(&patch_req)?;
        if manifest.bundle_id != made.patch_id {
            return Err(PublishError::BundleChanged {
                path: made.path.clone(),
                index: 0,
            });
        }
        let description = DeltaDescription {
            bundle_id: bundle.bundle_id,
            bundle_size: bundle.size,
            base_id: made.base_id,
            base_size: made.base_size,
            patch_id: made.patch_id,
            patch_size: made.patch_size,
            format: DeltaFormat::ZstdPatchFrom,
            window_log: made.window_log,
        };
        description
            .validate(&req.limits)
            .map_err(|e| DeltaError::MakePatch {
                path: base.clone(),
                reason: e.to_string(),
            })?;
        let sealed = envelope::seal_json(Kind::Manifest, &manifest, key).map_err(|e| {
            PublishError::Manifest {
                path: made.path.clone(),
                reason: e.to_string(),
            }
        })?;
        conn.publish(&topic::bundle_manifest(&made.patch_id), sealed, true)
            .await?;
        publish_chunks(conn, &made.path, &manifest, &mut |_| {}).await?;
        let topic = delta_topic(&bundle.bundle_id, &made.base_id);
        let sealed = envelope::seal_json(Kind::Delta, &description, key).map_err(|e| {
            PublishError::Manifest {
                path: made.path.clone(),
                reason: e.to_string(),
            }
        })?;
        conn.publish(&topic, sealed, true).await?;
        conn.flush(ACK_TIMEOUT).await?;
        progress(PushProgress::Delta {
            base_id: made.base_id,
            patch_size: made.patch_size,
            bundle_size: bundle.size,
        });
        out.published.push(DeltaReport {
            base_id: made.base_id,
            patch_id: made.patch_id,
            patch_size: made.patch_size,
            bundle_size: bundle.size,
            topic,
        });
    }
    Ok(out)
}

/// Publishes the chunks of `path` (described by `manifest`, already on the broker), each
/// checked against the manifest again, with a bounded window in flight; returns once the
/// broker acknowledged every one.
pub(crate) async fn publish_chunks(
    conn: &mut Connection,
    path: &Path,
    manifest: &BundleManifest,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<(), PublishError> {
    let bundle_id = manifest.bundle_id;
    // Chunks: re-read the file, re-check each chunk against the manifest (the file must not
    // change between hashing and publishing), keep a bounded window in flight.
    let mut file = File::open(path).map_err(|source| PublishError::ReadBundle {
        path: path.to_path_buf(),
        source,
    })?;
    let base = conn.acked();
    let mut sizes: Vec<u64> = Vec::with_capacity(manifest.chunks.len());
    for index in 0..manifest.chunk_count() {
        let (_, len) = manifest
            .chunk_range(index)
            .expect("index below the chunk count");
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf)
            .map_err(|source| PublishError::ReadBundle {
                path: path.to_path_buf(),
                source,
            })?;
        if fleet_proto::chunk::verify_chunk(manifest, index, &buf).is_err() {
            return Err(PublishError::BundleChanged {
                path: path.to_path_buf(),
                index,
            });
        }
        sizes.push(u64::from(len));
        let in_flight_limit = (conn.published() - base).saturating_sub(PUBLISH_WINDOW);
        conn.wait_acked(base + in_flight_limit, ACK_TIMEOUT).await?;
        report_chunks(conn, base, &sizes, manifest.size, progress);
        conn.publish(&topic::bundle_chunk(&bundle_id, index), buf, true)
            .await?;
    }
    let mut extra = [0u8; 1];
    if file
        .read(&mut extra)
        .map_err(|source| PublishError::ReadBundle {
            path: path.to_path_buf(),
            source,
        })?
        != 0
    {
        return Err(PublishError::BundleChanged {
            path: path.to_path_buf(),
            index: manifest.chunk_count(),
        });
    }
    // Wait for every chunk, reporting as acknowledgements arrive.
    loop {
        let target = conn.published();
        let step = (conn.acked() + 4).min(target);
        conn.wait_acked(step, ACK_TIMEOUT).await?;
        report_chunks(conn, base, &sizes, manifest.size, progress);
        if step >= target {
            break;
        }
    }

    Ok(())
}

fn report_chunks(
    conn: &Connection,
    base: u64,
    sizes: &[u64],
    total: u64,
    progress: &mut dyn FnMut(PushProgress),
) {
    // Acknowledgements arrive in order for one QoS 1 stream, so the first `acked` chunks are in.
    let acked = usize::try_from(conn.acked().saturating_sub(base)).unwrap_or(usize::MAX);
    let bytes: u64 = sizes.iter().take(acked).sum();
    progress(PushProgress::Chunks {
        acked_bytes: bytes,
        total_bytes: total,
    });
}

/// Which bundles `clear` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearScope {
    /// One bundle (refused while an offer names it, unless forced).
    Bundle(BundleId),
    /// Every bundle no retained offer names.
    Unreferenced,
}

/// What `clear` did (or would do, for a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClearReport {
    /// Bundle id -> topics emptied.
    pub cleared: BTreeMap<BundleId, usize>,
    /// Bundles left because an offer names them.
    pub kept: BTreeSet<BundleId>,
    /// Offer topics emptied (`--offer`).
    pub retracted: Vec<String>,
}

/// What `clear` removes.
#[derive(Debug, Clone)]
pub struct ClearRequest {
    pub scope: ClearScope,
    /// Retract the retained offers to these targets first (their bundles then count as not
    /// offered). Stations ignore an emptied offer topic: an update already under way goes on.
    pub retract: Vec<Target>,
    /// Clear a [`ClearScope::Bundle`] even while an offer names it.
    pub force: bool,
    /// Only report what would be removed.
    pub dry_run: bool,
    pub limits: Limits,
}

impl ClearRequest {
    /// Clear `scope`, retract nothing, not forced, for real.
    #[must_use]
    pub fn new(scope: ClearScope) -> Self {
        Self {
            scope,
            retract: Vec::new(),
            force: false,
            dry_run: false,
            limits: Limits::DEFAULT,
        }
    }
}

/// Removes retained offers and bundle topics (an empty retained publish deletes a retained
/// message).
pub async fn clear(addr: &BrokerAddr, req: &ClearRequest) -> Result<ClearReport, PublishError> {
    let (scope, force, dry_run, limits) = (&req.scope, req.force, req.dry_run, &req.limits);
    let mut book = OfferBook::read(addr, limits).await?;
    let mut retracted = Vec::new();
    for t in &req.retract {
        let topic = offer_topic(t);
        if book.offers.remove(&topic).is_some() {
            retracted.push(topic);
        }
    }
    let referenced = book.referenced_bundles();
    let manifests = collect_retained(
        addr,
        &["fleet/v1/bundles/+/manifest".to_owned()],
        RETAINED_QUIET,
        MAX_DISCOVERED,
    )
    .await?;
    // Bundle id -> chunk count from its manifest (None when the manifest is unreadable).
    let mut on_broker: BTreeMap<BundleId, Option<u32>> = BTreeMap::new();
    for m in &manifests {
        if let Ok(Topic::BundleManifest(id)) = Topic::parse(&m.topic) {
            let count = peek_manifest(&m.payload, limits)
                .filter(|mf| mf.bundle_id == id)
                .map(|mf| mf.chunk_count());
            on_broker.insert(id, count);
        }
    }
    // Deltas and compressed bundles: bundle id -> their description topics, and patch or
    // compressed file id -> the bundle it decodes to.
    let delta_msgs = collect_retained(
        addr,
        &[
            "fleet/v1/bundles/+/deltas/+".to_owned(),
            "fleet/v1/bundles/+/compressed".to_owned(),
        ],
        RETAINED_QUIET,
        MAX_DISCOVERED,
    )
    .await?;
    let mut deltas: BTreeMap<BundleId, Vec<String>> = BTreeMap::new();
    let mut patch_of: BTreeMap<BundleId, BundleId> = BTreeMap::new();
    for m in &delta_msgs {
        if let Some((bundle, _)) = fleet_proto::delta::parse_delta_topic(&m.topic) {
            deltas.entry(bundle).or_default().push(m.topic.clone());
            if let Ok(d) = envelope::read_unverified_json::<fleet_proto::delta::DeltaDescription>(
                &m.payload,
                Kind::Delta,
                limits,
            ) && d.bundle_id == bundle
            {
                patch_of.insert(d.patch_id, bundle);
            }
        }
        if let Some(bundle) = fleet_proto::delta::parse_compressed_topic(&m.topic) {
            deltas.entry(bundle).or_default().push(m.topic.clone());
            if let Ok(d) = envelope::read_unverified_json::<CompressedDescription>(
                &m.payload,
                Kind::Compressed,
                limits,
            ) && d.bundle_id == bundle
            {
                patch_of.insert(d.file_id, bundle);
            }
        }
    }
    let mut report = ClearReport {
        retracted,
        ..ClearReport::default()
    };
    let chosen: Vec<BundleId> = match scope {
        ClearScope::Bundle(id) => {
            if let Some(topics) = referenced.get(id)
                && !force
            {
                return Err(PublishError::StillOffered {
                    bundle_id: *id,
                    topics: topics.clone(),
                });
            }
            on_broker.entry(*id).or_insert(None);
            vec![*id]
        }
        ClearScope::Unreferenced => {
            let mut out = Vec::new();
            for id in on_broker.keys() {
                // A patch stays while the bundle it rebuilds is offered.
                let offered_patch = patch_of.get(id).is_some_and(|b| referenced.contains_key(b));
                if referenced.contains_key(id) || offered_patch {
                    report.kept.insert(*id);
                } else {
                    out.push(*id);
                }
            }
            out
        }
    };
    let mut conn = if dry_run {
        None
    } else {
        Some(Connection::open(addr, "fleetctl-clear", Duration::from_secs(10)).await?)
    };
    if let Some(c) = conn.as_mut() {
        for t in &report.retracted {
            c.publish(t, Vec::new(), true).await?;
        }
    }
    // A cleared bundle takes its deltas and its compressed transfer along: their descriptions
    // and their files.
    let mut chosen = chosen;
    let patches: Vec<BundleId> = patch_of
        .iter()
        .filter(|(p, b)| chosen.contains(b) && !chosen.contains(p))
        .map(|(p, _)| *p)
        .collect();
    for p in patches {
        on_broker.entry(p).or_insert(None);
        chosen.push(p);
    }
    for id in chosen {
        let count = match on_broker.get(&id).copied().flatten() {
            Some(n) => n,
            // No readable manifest: find the chunks by reading them.
            None => discover_chunk_count(addr, &id).await?,
        };
        let mut topics = deltas.remove(&id).unwrap_or_default();
        topics.push(topic::bundle_manifest(&id));
        topics.extend((0..count).map(|i| topic::bundle_chunk(&id, i)));
        if let Some(c) = conn.as_mut() {
            for t in &topics {
                c.publish(t, Vec::new(), true).await?;
                if c.published() - c.acked() > PUBLISH_WINDOW * 16 {
                    let goal = c.published() - PUBLISH_WINDOW;
                    c.wait_acked(goal, ACK_TIMEOUT).await?;
                }
            }
        }
        report.cleared.insert(id, topics.len());
    }
    if let Some(c) = conn {
        c.close(ACK_TIMEOUT).await?;
    }
    Ok(report)
}

async fn discover_chunk_count(addr: &BrokerAddr, id: &BundleId) -> Result<u32, PublishError> {
    let msgs = collect_retained(
        addr,
        &[topic::filter::bundle_chunks(id)],
        RETAINED_QUIET,
        MAX_DISCOVERED,
    )
    .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match Topic::parse(&m.topic) {
            Ok(Topic::BundleChunk { index, .. }) => Some(index.saturating_add(1)),
            _ => None,
        })
        .max()
        .unwrap_or(0))
}

/// SHA-256 of a file, hex (for reports and tests).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_update_ids_are_valid_topic_levels_and_stable() {
        let bid = BundleId::from_bytes([0xab; 32]);
        let v = Version::parse("1.2.0-rc.1+build.7").expect("version");
        let a = derived_update_id(&v, &bid);
        assert_eq!(a.as_str(), "1-2-0-rc-1-build-7-abababab");
        assert_eq!(a, derived_update_id(&v, &bid));
    }

    #[test]
    fn bundle_file_names_outside_the_manifest_alphabet_are_refused() {
        assert!(check_file_name(Path::new("/x/update-1.1.0.raucb")).is_ok());
        for bad in ["/x/.hidden", "/x/with space.raucb", "/x/ünï.raucb"] {
            assert!(check_file_name(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
