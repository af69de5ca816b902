//! Every size the wire format bounds, in one place.

/// Size limits applied to everything read from (and written to) the broker. The defaults are
/// the documented contract (`docs/reference/mqtt-protocol.md`); a station may configure
/// smaller ones, never larger ones than its broker allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest signed offer envelope, in bytes (default 64 KiB).
    pub max_offer_bytes: usize,
    /// Largest signed manifest envelope, in bytes (default 1 MiB: room for 8192 chunk hashes).
    pub max_manifest_bytes: usize,
    /// Largest chunk, in bytes (default 1 MiB). A manifest's `chunk-size` must not exceed it.
    pub max_chunk_bytes: usize,
    /// Smallest `chunk-size` a manifest may declare (default 4 KiB), so a bundle cannot be cut
    /// into millions of messages.
    pub min_chunk_bytes: usize,
    /// Most chunks in one bundle (default 8192).
    pub max_chunks: u32,
    /// Largest bundle, in bytes (default 2 GiB).
    pub max_bundle_bytes: u64,
    /// Largest retained station state message, in bytes (default 16 KiB).
    pub max_state_bytes: usize,
    /// Largest station event message, in bytes (default 8 KiB).
    pub max_event_bytes: usize,
    /// Longest `compatible` string, in bytes (default 64).
    pub max_compatible_len: usize,
    /// Longest bundle `file-name`, in bytes (default 128).
    pub max_file_name_len: usize,
    /// Longest MQTT topic this crate builds or parses, in bytes (default 256).
    pub max_topic_len: usize,
}

impl Limits {
    /// The documented defaults.
    pub const DEFAULT: Limits = Limits {
        max_offer_bytes: 64 * 1024,
        max_manifest_bytes: 1024 * 1024,
        max_chunk_bytes: 1024 * 1024,
        min_chunk_bytes: 4 * 1024,
        max_chunks: 8192,
        max_bundle_bytes: 2 * 1024 * 1024 * 1024,
        max_state_bytes: 16 * 1024,
        max_event_bytes: 8 * 1024,
        max_compatible_len: fleet_core::update::offer::MAX_COMPATIBLE_LEN,
        max_file_name_len: 128,
        max_topic_len: 256,
    };

    /// The envelope size limit for `kind`.
    #[must_use]
    pub fn max_envelope_bytes(&self, kind: crate::envelope::Kind) -> usize {
        match kind {
            crate::envelope::Kind::Offer => self.max_offer_bytes,
            crate::envelope::Kind::Manifest => self.max_manifest_bytes,
            // Rollout records and controls are offer-sized documents.
            crate::envelope::Kind::Rollout
            | crate::envelope::Kind::Control
            | crate::envelope::Kind::KeyRotation
            | crate::envelope::Kind::LogRequest => self.max_offer_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The chunk size `fleetctl push` uses unless told otherwise (256 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
