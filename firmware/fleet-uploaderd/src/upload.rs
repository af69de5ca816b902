//! One recording, from the index row to the mark: encode (or take the WAV), checksum, send,
//! confirm with a fresh look at the server (S3: `HEAD`; SFTP: `stat` and the server's
//! `sha256sum` or a read-back), and mark
//! uploaded only when `may_mark_uploaded` says so.

use std::path::{Path, PathBuf};

use fleet_core::upload::{
    Checksum, Failure, FailureScope, LocalObject, MarkDecision, RemoteConfirmation,
    may_mark_uploaded,
};
use fleet_retentiond::index::{Index, UploadRow};

use crate::config::{
    Config, Destination, Format, S3Destination, SftpDestination, load_credentials,
};
use crate::flac::{self, FlacError, PcmLayout};
use crate::object::Digests;
use crate::object::{self, Kind};
use crate::pace::Pacer;
use crate::s3::{InFlight, S3, S3Error};
use crate::sftp::{Confirmed, HashedBy, Sftp, SftpError};

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// On the server intact and marked uploaded.
    Marked {
        key: String,
        /// Bytes of the object on the server (FLAC or WAV).
        object_bytes: u64,
        /// Bytes of the recording on the station.
        recording_bytes: u64,
    },
    /// Retention deleted the recording while it was queued: skipped, not an error.
    SkippedDeleted,
    /// Failed; nothing was marked.
    Failed { failure: Failure, message: String },
}

fn failed(scope: FailureScope, reason: &str, message: String) -> Outcome {
    Outcome::Failed {
        failure: Failure {
            scope,
            reason: reason.to_owned(),
        },
        message,
    }
}

fn from_s3(e: &S3Error) -> Outcome {
    failed(e.scope(), &e.reason(), e.to_string())
}

fn from_sftp(e: &SftpError) -> Outcome {
    failed(e.scope(), &e.reason(), e.to_string())
}

/// The object prepared for sending.
struct Prepared {
    path: PathBuf,
    kind: Kind,
    verified_by_decode: bool,
    /// A spool file to remove once done.
    spool: Option<PathBuf>,
}

fn prepare(
    cfg: &Config,
    row: &UploadRow,
    wav: &Path,
    in_flight: Option<&InFlight>,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Prepared, Outcome> {
    let info = fleet_retentiond::wav::read(wav).map_err(|e| {
        failed(
            FailureScope::Recording,
            "local-read",
            format!("unable to read {}: {e}", wav.display()),
        )
    })?;
    let flac_ok = cfg.format == Format::Flac && PcmLayout::of(&info).is_ok();
    if !flac_ok {
        return Ok(Prepared {
            path: wav.to_owned(),
            kind: Kind::Wav,
            verified_by_decode: true,
            spool: None,
        });
    }
    let stem = Path::new(&row.path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}", row.id.0));
    let spool = cfg.spool_dir().join(format!("{stem}.flac"));
    // A multipart upload in flight for this recording: its spool file (same size and SHA-256,
    // checked by the multipart resume) is sent again as it is, after a fresh decode check.
    let reuse =
        in_flight.is_some_and(|f| f.recording == row.path && f.object == spool) && spool.exists();
    let mut stop = || keep_going();
    let result = if reuse {
        PcmLayout::of(&info)
            .map_err(|reason| FlacError::Unsupported {
                path: wav.to_owned(),
                reason,
            })
            .and_then(|layout| flac::verify(wav, &layout, &spool, &mut stop))
    } else {
        flac::encode_verified(wav, &info, &spool, &mut stop).map(drop)
    };
    match result {
        Ok(()) => Ok(Prepared {
            path: spool.clone(),
            kind: Kind::Flac,
            verified_by_decode: true,
            spool: Some(spool),
        }),
        Err(FlacError::Interrupted { .. }) => Err(failed(
            FailureScope::Link,
            "shutdown",
            "stopped by shutdown".into(),
        )),
        Err(e) => {
            let _ = std::fs::remove_file(&spool);
            let reason = match e {
                FlacError::Verify { .. } => "flac-verify",
                FlacError::Write { .. } => "spool-write",
                _ => "flac-encode",
            };
            Err(failed(FailureScope::Recording, reason, e.to_string()))
        }
    }
}

/// The durable side effects an upload needs from the daemon.
pub trait Persist {
    /// Records (or clears) the multipart upload in flight, durably.
    ///
    /// # Errors
    /// The state file cannot be written.
    fn in_flight(&mut self, record: Option<&InFlight>) -> std::io::Result<()>;
    /// The multipart upload in flight, as last recorded.
    fn current(&self) -> Option<&InFlight>;
}

/// Uploads `row` and marks it when the server confirms it. Never marks on any other path.
pub fn upload_one(
    cfg: &Config,
    index: &mut Index,
    row: &UploadRow,
    in_flight: Option<InFlight>,
    persist: &mut dyn Persist,
    pacer: &mut Pacer<'_>,
) -> Outcome {
    // Retention may have deleted it since the queue was read.
    match index.is_present(&row.path) {
        Ok(Some(true)) => {}
        Ok(_) => return Outcome::SkippedDeleted,
        Err(e) => return failed(FailureScope::Link, "index", e.to_string()),
    }
    let Some(dest) = &cfg.destination else {
        return failed(
            FailureScope::Link,
            "unconfigured",
            "no destination configured".into(),
        );
    };
    let wav = cfg.recordings_dir.join(&row.path);
    if !wav.exists() {
        // Deleted between the look-up and now, or vanished: retention's reconciliation says
        // which. Not uploaded, not marked.
        return match index.is_present(&row.path) {
            Ok(Some(true)) => failed(
                FailureScope::Recording,
                "missing-file",
                format!("{} is indexed but not on disk", wav.display()),
            ),
            _ => Outcome::SkippedDeleted,
        };
    }
    let prepared = match prepare(cfg, row, &wav, in_flight.as_ref(), &mut || {
        pacer.keep_going()
    }) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let outcome = send_and_confirm(cfg, dest, index, row, &prepared, in_flight, persist, pacer);
    // The spool file goes once the recording is marked or gone; on failure it stays only while a
    // multipart upload of it is in flight (a resume sends the same bytes).
    if let Some(spool) = &prepared.spool {
        let keep = matches!(outcome, Outcome::Failed { .. })
            && persist.current().is_some_and(|f| f.object == *spool);
        if !keep {
            let _ = std::fs::remove_file(spool);
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn send_and_confirm(
    cfg: &Config,
    dest: &Destination,
    index: &mut Index,
    row: &UploadRow,
    prepared: &Prepared,
    in_flight: Option<InFlight>,
    persist: &mut dyn Persist,
    pacer: &mut Pacer<'_>,
) -> Outcome {
    let file_name = Path::new(&row.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let key_with = |prefix: &str| {
        object::key(
            prefix,
            &row.station,
            &row.device,
            row.start_unix_ms,
            row.start_trusted,
            file_name.as_deref().unwrap_or(&row.path),
            prepared.kind,
        )
    };
    let sent = match dest {
        Destination::S3(d) => {
            let key = key_with(&d.prefix);
            send_s3(cfg, d, row, prepared, key, in_flight, persist, pacer)
        }
        Destination::Sftp(d) => send_sftp(cfg, d, prepared, &key_with(""), pacer),
    };
    let (local, key, remote) = match sent {
        Ok(s) => s,
        Err(o) => return o,
    };
    let present = match index.is_present(&row.path) {
        Ok(p) => p == Some(true),
        Err(e) => return failed(FailureScope::Link, "index", e.to_string()),
    };
    match may_mark_uploaded(present, &local, remote.as_ref()) {
        MarkDecision::Mark => {
            match index.set_flags(std::slice::from_ref(&row.path), Some(true), None) {
                Ok(_) => Outcome::Marked {
                    key,
                    object_bytes: local.size_bytes,
                    recording_bytes: row.size_bytes,
                },
                Err(e) => failed(FailureScope::Link, "index", e.to_string()),
            }
        }
        MarkDecision::SkipDeleted => Outcome::SkippedDeleted,
        MarkDecision::RefuseUnverified => failed(
            FailureScope::Recording,
            "flac-verify",
            "the encoded object did not decode back".into(),
        ),
        MarkDecision::RefuseSizeMismatch { local, remote } => failed(
            FailureScope::Recording,
            "size",
            format!("the server holds {remote:?} bytes under {key}, the station sent {local}"),
        ),
        MarkDecision::RefuseChecksumMismatch => failed(
            FailureScope::Recording,
            "checksum",
            format!("the server's checksum of {key} is not the station's"),
        ),
    }
}

/// What the station sent, under which key, and what the server reported in a fresh look.
type Sent = (LocalObject, String, Option<RemoteConfirmation>);

/// The object's checksums, read from the file in one pass (`Interrupted`: shutdown).
fn local_digests(
    prepared: &Prepared,
    sums: object::Sums,
    pacer: &mut Pacer<'_>,
) -> Result<Digests, Outcome> {
    let started = std::time::Instant::now();
    match object::digests(&prepared.path, sums, &mut || pacer.keep_going()) {
        Ok(d) => {
            tracing::debug!(path = %prepared.path.display(), bytes = d.size, ms = started.elapsed().as_millis(), "checksummed");
            Ok(d)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(failed(
            FailureScope::Link,
            "shutdown",
            "stopped by shutdown".into(),
        )),
        Err(e) => Err(local_read(prepared, &e)),
    }
}

fn local_read(prepared: &Prepared, e: &dyn std::fmt::Display) -> Outcome {
    failed(
        FailureScope::Recording,
        "local-read",
        format!("unable to read {}: {e}", prepared.path.display()),
    )
}

#[allow(clippy::too_many_arguments)]
fn send_s3(
    cfg: &Config,
    dest: &S3Destination,
    row: &UploadRow,
    prepared: &Prepared,
    key: String,
    in_flight: Option<InFlight>,
    persist: &mut dyn Persist,
    pacer: &mut Pacer<'_>,
) -> Result<Sent, Outcome> {
    let sums = object::Sums::S3 {
        part_size: part_size(dest, &prepared.path),
    };
    let digests = &local_digests(prepared, sums, pacer)?;
    let multipart = digests.size > dest.multipart_threshold_bytes;
    let local = LocalObject {
        size_bytes: digests.size,
        checksum: digests.s3_etag(multipart),
        verified_by_decode: prepared.verified_by_decode,
    };
    // Credentials are read at every connect: a rotation or a push needs no restart.
    let creds = load_credentials(&cfg.credentials_file)
        .map_err(|e| failed(FailureScope::Link, "credentials", e.to_string()))?;
    let s3 = S3::new(dest, &creds, cfg.limits.max_response_bytes).map_err(|e| from_s3(&e))?;
    // Already there intact (a power cut after the upload, before the mark): mark without sending.
    let before = s3.head(&key).map_err(|e| from_s3(&e))?;
    if may_mark_uploaded(true, &local, before.as_ref()) != MarkDecision::Mark {
        let sent = if multipart {
            let mut p = |r: Option<&InFlight>| persist.in_flight(r);
            s3.multipart(
                &row.path,
                &key,
                &prepared.path,
                digests,
                prepared.kind,
                in_flight,
                &mut p,
                pacer,
            )
        } else {
            s3.put(&key, &prepared.path, digests, prepared.kind, pacer)
        };
        sent.map_err(|e| from_s3(&e))?;
    }
    // The confirmation comes from a fresh request, never from what was sent.
    let remote = s3.head(&key).map_err(|e| from_s3(&e))?;
    Ok((local, key, remote))
}

/// SFTP: both looks take the object's SHA-256 as `verify` says (the server's `sha256sum`, or a
/// read-back). The station's SHA-256 is taken while the object is read for sending; only an
/// object of the same size already on the server (a power cut after an upload, before its mark)
/// costs a separate pass, and if it is intact it is marked without sending it again. A checksum
/// the server's `sha256sum` gave that differs from the station's fails the upload here, naming
/// both: it is never retried by reading back.
fn send_sftp(
    cfg: &Config,
    dest: &SftpDestination,
    prepared: &Prepared,
    key: &str,
    pacer: &mut Pacer<'_>,
) -> Result<Sent, Outcome> {
    let size = std::fs::metadata(&prepared.path)
        .map_err(|e| local_read(prepared, &e))?
        .len();
    let local_with = |sha256: [u8; 32]| LocalObject {
        size_bytes: size,
        checksum: Checksum::Sha256(sha256),
        verified_by_decode: prepared.verified_by_decode,
    };
    // The key files are read at every connect, like S3's credentials.
    let sftp = Sftp::connect(dest, &cfg.limits).map_err(|e| from_sftp(&e))?;
    let path = sftp.path_of(key);
    let before = sftp
        .confirm(key, size, pacer)
        .map_err(|e| from_sftp(&e))?
        .map(|c| c.remote);
    if let Some(remote) = &before
        && remote.checksum.is_some()
    {
        let digests = local_digests(prepared, object::Sums::Sha256, pacer)?;
        let local = local_with(digests.sha256);
        if digests.size == size
            && may_mark_uploaded(true, &local, Some(remote)) == MarkDecision::Mark
        {
            sftp.close();
            return Ok((local, path, before));
        }
    }
    let written = sftp
        .send(key, &prepared.path, size, pacer)
        .map_err(|e| from_sftp(&e))?;
    let local = local_with(written.sha256);
    let after = sftp.confirm(key, size, pacer).map_err(|e| from_sftp(&e))?;
    if let Some(Confirmed {
        remote:
            RemoteConfirmation {
                checksum: Some(Checksum::Sha256(theirs)),
                ..
            },
        hashed_by: Some(HashedBy::Server),
    }) = &after
        && *theirs != written.sha256
    {
        sftp.close();
        return Err(failed(
            FailureScope::Recording,
            "checksum",
            format!(
                "the server's SHA-256 of {path} (openssl dgst or sha256sum) printed {}, the \
                 station's is {}",
                hex::encode(theirs),
                hex::encode(written.sha256)
            ),
        ));
    }
    sftp.close();
    Ok((local, path, after.map(|c| c.remote)))
}

/// The part size: the configured one, raised so no object needs more than 10,000 parts.
fn part_size(dest: &S3Destination, path: &Path) -> u64 {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    dest.part_size_bytes.max(size.div_ceil(10_000))
}
