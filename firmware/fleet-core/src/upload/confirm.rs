//! The one rule that lets a recording become deletable: mark it uploaded only when the remote
//! confirmed the very object the station holds.

/// A checksum of an object's bytes. The destination checks one kind; both sides must agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// S3 ETag of a single PUT (the object's MD5) or of a multipart upload (MD5 of the parts'
    /// MD5s, with the part count).
    S3Etag { md5: [u8; 16], parts: Option<u32> },
    /// SHA-256 of the whole object (SFTP: the station reads the file back and hashes it).
    Sha256([u8; 32]),
}

/// What the station uploaded: the object it built (FLAC or WAV), after verifying it decodes to the
/// recording's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalObject {
    pub size_bytes: u64,
    pub checksum: Checksum,
    /// The encoded object decoded back to the recording's samples (always true for WAV, which is
    /// sent unchanged).
    pub verified_by_decode: bool,
}

/// What the remote said about the object after the upload, from a fresh request (HEAD, stat,
/// read-back), never from what the station sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteConfirmation {
    pub size_bytes: u64,
    /// `None`: the remote reported no checksum the station can compare.
    pub checksum: Option<Checksum>,
}

/// The answer of [`may_mark_uploaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkDecision {
    /// The remote holds the object intact: mark it uploaded.
    Mark,
    /// The recording is gone from the station (retention deleted it while it was queued): skip it,
    /// it is not an error.
    SkipDeleted,
    /// The local object did not decode back to the recording: never upload or mark it.
    RefuseUnverified,
    /// The remote has no object, or one of another size.
    RefuseSizeMismatch { local: u64, remote: Option<u64> },
    /// The remote reported no checksum, or a different one.
    RefuseChecksumMismatch,
}

/// Decides whether the recording may be marked uploaded. `recording_present` is the index's view
/// (not deleted); `remote` is `None` when the remote has no such object.
#[must_use]
pub fn may_mark_uploaded(
    recording_present: bool,
    local: &LocalObject,
    remote: Option<&RemoteConfirmation>,
) -> MarkDecision {
    if !recording_present {
        return MarkDecision::SkipDeleted;
    }
    if !local.verified_by_decode {
        return MarkDecision::RefuseUnverified;
    }
    let Some(remote) = remote else {
        return MarkDecision::RefuseSizeMismatch {
            local: local.size_bytes,
            remote: None,
        };
    };
    if remote.size_bytes != local.size_bytes {
        return MarkDecision::RefuseSizeMismatch {
            local: local.size_bytes,
            remote: Some(remote.size_bytes),
        };
    }
    match remote.checksum {
        Some(c) if c == local.checksum => MarkDecision::Mark,
        _ => MarkDecision::RefuseChecksumMismatch,
    }
}
