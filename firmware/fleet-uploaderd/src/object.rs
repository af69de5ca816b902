//! The object that leaves the station: its key on the server and its checksums.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use fleet_core::upload::Checksum;
use md5::{Digest as _, Md5};
use sha2::Sha256;

/// What kind of file is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flac,
    Wav,
}

impl Kind {
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::Flac => "flac",
            Self::Wav => "wav",
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Flac => "audio/flac",
            Self::Wav => "audio/wav",
        }
    }
}

/// Keeps a key segment to `[A-Za-z0-9._-]`, anything else becomes `_` (station and device ids
/// are already sanitised by the recorder; a foreign file name may not be).
fn segment(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}

/// Civil date (UTC) of a Unix time in milliseconds, `YYYY-MM-DD`.
fn utc_date(unix_ms: i64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = unix_ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

/// The object key (ADR 0007): `<prefix><station>/<device>/<YYYY-MM-DD>/<stem>.<ext>`, the date
/// being the UTC date of a trusted start, `undated` otherwise.
#[must_use]
pub fn key(
    prefix: &str,
    station: &str,
    device: &str,
    start_unix_ms: Option<i64>,
    start_trusted: bool,
    file_name: &str,
    kind: Kind,
) -> String {
    let date = match start_unix_ms {
        Some(ms) if start_trusted => utc_date(ms),
        _ => "undated".into(),
    };
    let stem = Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "{prefix}{}/{}/{date}/{}.{}",
        segment(station),
        segment(device),
        segment(&stem),
        kind.extension()
    )
}

/// Which checksums a destination needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sums {
    /// S3: MD5, SHA-256 and the MD5 of every `part_size` slice.
    S3 { part_size: u64 },
    /// SFTP: SHA-256 only (the read-back is compared with it).
    Sha256,
}

/// The checksums of a file, for one part size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    /// Zero with [`Sums::Sha256`].
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
    /// MD5 of each `part_size` slice (one entry when the file fits one part); empty with
    /// [`Sums::Sha256`].
    pub part_md5s: Vec<[u8; 16]>,
    /// Zero with [`Sums::Sha256`].
    pub part_size: u64,
}

impl Digests {
    /// What S3 reports for this object: the MD5 for one PUT, the MD5 of the parts' MD5s with the
    /// part count for a multipart upload.
    #[must_use]
    pub fn s3_etag(&self, multipart: bool) -> Checksum {
        if multipart {
            let mut h = Md5::new();
            for p in &self.part_md5s {
                h.update(p);
            }
            Checksum::S3Etag {
                md5: h.finalize().into(),
                parts: Some(u32::try_from(self.part_md5s.len()).unwrap_or(u32::MAX)),
            }
        } else {
            Checksum::S3Etag {
                md5: self.md5,
                parts: None,
            }
        }
    }
}

/// Reads `path` once and computes its SHA-256 and, for S3, its MD5 and per-part MD5s.
/// `keep_going` is asked every 64 KiB (shutdown, watchdog).
///
/// # Errors
/// The file cannot be read, or `keep_going` said stop (`Interrupted`).
pub fn digests(
    path: &Path,
    sums: Sums,
    keep_going: &mut dyn FnMut() -> bool,
) -> io::Result<Digests> {
    let Sums::S3 { part_size } = sums else {
        return sha256_only(path, keep_going);
    };
    let part_size = part_size.max(1);
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut part = Md5::new();
    let mut in_part = 0u64;
    let mut parts = Vec::new();
    let size = each_chunk(path, keep_going, |mut chunk| {
        md5.update(chunk);
        sha.update(chunk);
        while !chunk.is_empty() {
            let room = usize::try_from(part_size - in_part).unwrap_or(usize::MAX);
            let take = room.min(chunk.len());
            part.update(&chunk[..take]);
            in_part += take as u64;
            chunk = &chunk[take..];
            if in_part == part_size {
                parts.push(std::mem::take(&mut part).finalize().into());
                in_part = 0;
            }
        }
    })?;
    if in_part > 0 || parts.is_empty() {
        parts.push(part.finalize().into());
    }
    Ok(Digests {
        size,
        md5: md5.finalize().into(),
        sha256: sha.finalize().into(),
        part_md5s: parts,
        part_size,
    })
}

fn sha256_only(path: &Path, keep_going: &mut dyn FnMut() -> bool) -> io::Result<Digests> {
    let mut sha = Sha256::new();
    let size = each_chunk(path, keep_going, |chunk| sha.update(chunk))?;
    Ok(Digests {
        size,
        md5: [0; 16],
        sha256: sha.finalize().into(),
        part_md5s: Vec::new(),
        part_size: 0,
    })
}

/// Reads `path` in 64 KiB chunks, handing each to `each`, asking `keep_going` before every one;
/// returns the bytes read.
fn each_chunk(
    path: &Path,
    keep_going: &mut dyn FnMut() -> bool,
    mut each: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut f = File::open(path)?;
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if !keep_going() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped by shutdown",
            ));
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        each(&buf[..n]);
        size += n as u64;
    }
}

/// Parses an S3 ETag (`"<32 hex>"` or `"<32 hex>-<parts>"`, quotes optional).
#[must_use]
pub fn parse_etag(etag: &str) -> Option<Checksum> {
    let e = etag.trim().trim_matches('"');
    let (hexpart, parts) = match e.split_once('-') {
        Some((h, n)) => (h, Some(n.parse::<u32>().ok()?)),
        None => (e, None),
    };
    let mut md5 = [0u8; 16];
    hex::decode_to_slice(hexpart, &mut md5).ok()?;
    Some(Checksum::S3Etag { md5, parts })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = key(
            "fleet/",
            "st-1",
            "mic-0",
            Some(1_764_979_200_000),
            true,
            "20251206T000000.000Z_st-1_mic-0_00000001.wav",
            Kind::Flac,
        );
        assert_eq!(
            k,
            "fleet/st-1/mic-0/2025-12-06/20251206T000000.000Z_st-1_mic-0_00000001.flac"
        );
        let k = key("", "st 1", "../x", Some(0), false, "a b.wav", Kind::Wav);
        assert_eq!(k, "st_1/.._x/undated/a_b.wav");
    }

    #[test]
    fn civil_dates_are_right_around_leap_years() {
        for (ms, d) in [
            (0, "1970-01-01"),
            (951_782_400_000, "2000-02-29"),
            (4_107_542_399_000, "2100-02-28"),
            (-86_400_000, "1969-12-31"),
        ] {
            assert_eq!(utc_date(ms), d);
        }
    }

    #[test]
    fn etags_parse_with_and_without_a_part_count() {
        let md5 = [0xab; 16];
        assert_eq!(
            parse_etag(&format!("\"{}\"", hex::encode(md5))),
            Some(Checksum::S3Etag { md5, parts: None })
        );
        assert_eq!(
            parse_etag(&format!("{}-12", hex::encode(md5))),
            Some(Checksum::S3Etag {
                md5,
                parts: Some(12)
            })
        );
        assert_eq!(parse_etag("W/\"xyz\""), None);
    }

    #[test]
    fn part_digests_cover_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let d = digests(&p, Sums::S3 { part_size: 100_000 }, &mut || true).unwrap();
        assert_eq!(d.size, 250_000);
        assert_eq!(d.part_md5s.len(), 3);
        let want: [u8; 16] = Md5::digest(&data[200_000..]).into();
        assert_eq!(d.part_md5s[2], want);
        let whole: [u8; 16] = Md5::digest(&data).into();
        assert_eq!(d.md5, whole);
        let only = digests(&p, Sums::Sha256, &mut || true).unwrap();
        assert_eq!((only.size, only.sha256), (d.size, d.sha256));
    }
}
