//! WAV to FLAC with the reference encoder, and the proof that the FLAC decodes back to the WAV's
//! samples.
//!
//! The encoder is libFLAC (the system's, through `flac-bound`'s safe API) at `flac -5`'s settings
//! and the decoder `claxon`, two independent implementations; this module only moves samples
//! between files and rewrites FLAC's metadata block headers. The GUANO text goes into a Vorbis
//! comment named `GUANO` (ADR 0007).
//!
//! libFLAC writes `<out>.frames` itself (it seeks back at the end to complete STREAMINFO: sample
//! count, MD5 of the samples, frame sizes); the `flac-bound` binding cannot hand it metadata
//! blocks, so the final file is then put together: `fLaC`, libFLAC's STREAMINFO, a VORBIS_COMMENT
//! with the GUANO text (the last metadata block), and libFLAC's frames copied in the kernel
//! (`copy_file_range`). Memory stays at one block of samples.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flac_bound::FlacEncoder;
use fleet_retentiond::wav::WavInfo;

/// Samples per FLAC frame (libFLAC's choice at `-5`).
pub const BLOCK_SIZE: usize = 4096;
/// libFLAC's compression level: `flac -5`, the reference encoder's default.
pub const COMPRESSION_LEVEL: u32 = 5;
/// The Vorbis comment that carries the GUANO text.
pub const GUANO_TAG: &str = "GUANO";
/// The vendor string of the Vorbis comment block when libFLAC's own cannot be read.
pub const VENDOR: &str = "fleet-uploaderd (libFLAC)";
/// Largest metadata block libFLAC writes before its frames that is read back (its Vorbis comment:
/// a vendor string and no entries).
const MAX_LIBFLAC_BLOCK: usize = 1 << 16;

/// Why a recording could not be encoded or verified.
#[derive(Debug, thiserror::Error)]
pub enum FlacError {
    #[error("unable to encode {path} as FLAC: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("unable to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to encode {path}: {message}")]
    Encode { path: PathBuf, message: String },
    #[error("unable to verify {path}: {message}")]
    Verify { path: PathBuf, message: String },
    #[error("encoding of {path} interrupted by shutdown")]
    Interrupted { path: PathBuf },
}

/// The sample layout of a WAV the encoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmLayout {
    pub rate: u32,
    pub channels: u16,
    pub bits: u16,
    pub data_offset: u64,
    pub data_bytes: u64,
}

impl PcmLayout {
    /// The layout of an integer-PCM WAV FLAC can hold (16 or 24 bits, the widths the decode check
    /// compares), or why
    /// not.
    ///
    /// # Errors
    /// Float samples, 8 or 32 bits, no channels, an implausible rate, or a missing data chunk.
    pub fn of(info: &WavInfo) -> Result<Self, String> {
        let (Some(rate), Some(channels), Some(bits), Some(data_offset), Some(data_bytes)) = (
            info.sample_rate,
            info.channels,
            info.bits_per_sample,
            info.data_offset,
            info.data_bytes,
        ) else {
            return Err("the fmt or data chunk is missing".into());
        };
        if info.format_tag != Some(1) {
            return Err(format!(
                "format tag {:?} is not integer PCM",
                info.format_tag
            ));
        }
        if !matches!(bits, 16 | 24) {
            return Err(format!("{bits}-bit samples (FLAC here takes 16 or 24)"));
        }
        if !(1..=8).contains(&channels) {
            return Err(format!("{channels} channels (FLAC takes 1 to 8)"));
        }
        if !(1..=655_350).contains(&rate) {
            return Err(format!("sample rate {rate} Hz"));
        }
        Ok(Self {
            rate,
            channels,
            bits,
            data_offset,
            data_bytes,
        })
    }

    #[must_use]
    pub fn frame_bytes(&self) -> usize {
        usize::from(self.channels) * usize::from(self.bits / 8)
    }

    /// Inter-channel sample frames in the data chunk (a trailing partial frame is ignored, as by
    /// every WAV reader).
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.data_bytes / self.frame_bytes() as u64
    }
}

/// A FLAC file written and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Inter-channel sample frames.
    pub frames: u64,
}

/// The Vorbis comment block body: `vendor`, then `GUANO=<text>`.
#[must_use]
pub fn vorbis_comment(vendor: &str, guano: &str) -> Vec<u8> {
    let entry = format!("{GUANO_TAG}={guano}");
    let mut b = Vec::with_capacity(16 + vendor.len() + entry.len());
    // Lengths are little-endian u32 (Vorbis), bounded by the GUANO chunk limit.
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    b.extend_from_slice(&len32(vendor.len()));
    b.extend_from_slice(vendor.as_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&len32(entry.len()));
    b.extend_from_slice(entry.as_bytes());
    b
}

fn block_header(last: bool, kind: u8, len: usize) -> [u8; 4] {
    let len = u32::try_from(len).unwrap_or(0xFF_FFFF).min(0xFF_FFFF);
    let l = len.to_be_bytes();
    [if last { 0x80 | kind } else { kind }, l[1], l[2], l[3]]
}

/// What libFLAC wrote before its frames: the STREAMINFO body, its vendor string, and where the
/// frames start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LibflacHeader {
    stream_info: [u8; 34],
    vendor: Option<String>,
    frames_at: u64,
}

/// Reads the metadata blocks libFLAC wrote (`fLaC`, STREAMINFO, its Vorbis comment, and whatever
/// else a version may add) up to the first frame.
fn read_libflac_header(r: &mut impl Read) -> Result<LibflacHeader, String> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != b"fLaC" {
        return Err("libFLAC's output does not start with fLaC".into());
    }
    let mut at = 4u64;
    let mut stream_info = None;
    let mut vendor = None;
    loop {
        let mut h = [0u8; 4];
        r.read_exact(&mut h).map_err(|e| e.to_string())?;
        let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
        if len > MAX_LIBFLAC_BLOCK {
            return Err(format!("libFLAC wrote a metadata block of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        at += 4 + len as u64;
        match h[0] & 0x7F {
            0 => {
                stream_info = Some(
                    <[u8; 34]>::try_from(body.as_slice())
                        .map_err(|_| format!("libFLAC's STREAMINFO is {len} bytes, not 34"))?,
                );
            }
            4 => vendor = vendor_of(&body),
            _ => {}
        }
        if h[0] & 0x80 != 0 {
            break;
        }
    }
    Ok(LibflacHeader {
        stream_info: stream_info.ok_or_else(|| "libFLAC wrote no STREAMINFO".to_owned())?,
        vendor,
        frames_at: at,
    })
}

fn vendor_of(comment: &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(comment.get(..4)?.try_into().ok()?);
    let text = comment.get(4..4 + usize::try_from(len).ok()?)?;
    String::from_utf8(text.to_vec()).ok()
}

/// Encodes the WAV at `wav` (described by `info`) into `out`, fsyncs it, then decodes it again
/// and compares every sample with the WAV. `keep_going` is asked between frames (shutdown,
/// watchdog).
///
/// # Errors
/// An unsupported layout, an I/O failure, an encoder error, a mismatch on decode, or shutdown.
pub fn encode_verified(
    wav: &Path,
    info: &WavInfo,
    out: &Path,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Encoded, FlacError> {
    let layout = PcmLayout::of(info).map_err(|reason| FlacError::Unsupported {
        path: wav.to_owned(),
        reason,
    })?;
    let guano = info
        .guano
        .as_deref()
        .unwrap_or("")
        .trim_end_matches([' ', '\n', '\0']);
    encode(wav, &layout, guano, out, keep_going)?;
    verify(wav, &layout, out, keep_going)?;
    let size_bytes = std::fs::metadata(out)
        .map_err(|source| FlacError::Read {
            path: out.to_owned(),
            source,
        })?
        .len();
    Ok(Encoded {
        path: out.to_owned(),
        size_bytes,
        frames: layout.frames(),
    })
}

/// Encodes without verifying (the benchmark measures the two apart).
///
/// # Errors
/// As [`encode_verified`].
pub fn encode(
    wav: &Path,
    layout: &PcmLayout,
    guano: &str,
    out: &Path,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(), FlacError> {
    let mut frames_path = out.as_os_str().to_owned();
    frames_path.push(".frames");
    let frames_path = PathBuf::from(frames_path);
    let result = encode_frames(wav, layout, &frames_path, keep_going)
        .and_then(|()| assemble(&frames_path, guano, out));
    let _ = std::fs::remove_file(&frames_path);
    result
}

/// libFLAC encodes the WAV's samples into `frames_path` (a complete FLAC file without GUANO).
fn encode_frames(
    wav: &Path,
    layout: &PcmLayout,
    frames_path: &Path,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(), FlacError> {
    let rerr = |source| FlacError::Read {
        path: wav.to_owned(),
        source,
    };
    let eerr = |message: String| FlacError::Encode {
        path: wav.to_owned(),
        message,
    };
    // The binding opens the file by a UTF-8 name (and would panic on another).
    let Some(frames_name) = frames_path.to_str() else {
        return Err(FlacError::Write {
            path: frames_path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        });
    };
    let encoder = FlacEncoder::new()
        .ok_or_else(|| eerr("libFLAC could not allocate an encoder".into()))?
        .channels(u32::from(layout.channels))
        .bits_per_sample(u32::from(layout.bits))
        .sample_rate(layout.rate)
        .compression_level(COMPRESSION_LEVEL)
        .blocksize(u32::try_from(BLOCK_SIZE).unwrap_or(4096))
        .total_samples_estimate(layout.frames());
    let mut encoder = encoder
        .init_file(&frames_name)
        .map_err(|e| eerr(format!("libFLAC refused to start: {e:?}")))?;

    let mut src = File::open(wav).map_err(rerr)?;
    src.seek(SeekFrom::Start(layout.data_offset))
        .map_err(rerr)?;
    let mut src = BufReader::with_capacity(
        1 << 16,
        src.take(layout.frames() * layout.frame_bytes() as u64),
    );
    let channels = usize::from(layout.channels);
    let bytes_per_sample = usize::from(layout.bits / 8);
    let mut raw = vec![0u8; BLOCK_SIZE * layout.frame_bytes()];
    let mut samples = vec![0i32; BLOCK_SIZE * channels];
    let mut blocks = 0usize;
    loop {
        if !keep_going() {
            return Err(FlacError::Interrupted {
                path: wav.to_owned(),
            });
        }
        let n = read_full(&mut src, &mut raw).map_err(rerr)?;
        let n = n - n % layout.frame_bytes();
        if n == 0 {
            break;
        }
        let count = n / bytes_per_sample;
        match bytes_per_sample {
            2 => {
                for (s, b) in samples.iter_mut().zip(raw[..n].chunks_exact(2)) {
                    *s = i32::from(i16::from_le_bytes([b[0], b[1]]));
                }
            }
            _ => {
                for (s, b) in samples.iter_mut().zip(raw[..n].chunks_exact(3)) {
                    *s = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
                }
            }
        }
        let per_channel = u32::try_from(count / channels).unwrap_or(u32::MAX);
        if encoder
            .process_interleaved(&samples[..count], per_channel)
            .is_err()
        {
            return Err(eerr(format!("libFLAC stopped: {:?}", encoder.state())));
        }
        blocks += 1;
    }
    if blocks == 0 {
        return Err(FlacError::Unsupported {
            path: wav.to_owned(),
            reason: "the recording holds no samples".into(),
        });
    }
    // libFLAC writes the last frame, seeks back to complete STREAMINFO and closes the file.
    encoder
        .finish()
        .map_err(|e| eerr(format!("libFLAC could not finish: {:?}", e.state())))?;
    Ok(())
}

/// Writes `out`: `fLaC`, the STREAMINFO of `frames_path`, the Vorbis comment with the GUANO text,
/// then the frames of `frames_path`; fsynced.
fn assemble(frames_path: &Path, guano: &str, out: &Path) -> Result<(), FlacError> {
    let werr = |source| FlacError::Write {
        path: out.to_owned(),
        source,
    };
    let ferr = |source| FlacError::Read {
        path: frames_path.to_owned(),
        source,
    };
    let mut frames = File::open(frames_path).map_err(ferr)?;
    let header = read_libflac_header(&mut BufReader::with_capacity(1 << 12, &mut frames)).map_err(
        |message| FlacError::Encode {
            path: frames_path.to_owned(),
            message,
        },
    )?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 12, file);
    w.write_all(b"fLaC").map_err(werr)?;
    w.write_all(&block_header(false, 0, 34)).map_err(werr)?;
    w.write_all(&header.stream_info).map_err(werr)?;
    let comment = vorbis_comment(header.vendor.as_deref().unwrap_or(VENDOR), guano);
    w.write_all(&block_header(true, 4, comment.len()))
        .map_err(werr)?;
    w.write_all(&comment).map_err(werr)?;
    let mut file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    frames
        .seek(SeekFrom::Start(header.frames_at))
        .map_err(ferr)?;
    // File to file: the kernel copies (copy_file_range), no bytes pass through here.
    io::copy(&mut frames, &mut file).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decodes `flac` with claxon (frame CRCs checked) and compares its format, its sample count and
/// every sample with the WAV.
///
/// # Errors
/// Any difference, or a file that does not decode.
pub fn verify(
    wav: &Path,
    layout: &PcmLayout,
    flac: &Path,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<(), FlacError> {
    let verr = |message: String| FlacError::Verify {
        path: flac.to_owned(),
        message,
    };
    let rerr = |source| FlacError::Read {
        path: wav.to_owned(),
        source,
    };
    let file = File::open(flac).map_err(|source| FlacError::Read {
        path: flac.to_owned(),
        source,
    })?;
    let mut reader = claxon::FlacReader::new(BufReader::with_capacity(1 << 16, file))
        .map_err(|e| verr(e.to_string()))?;
    let si = reader.streaminfo();
    if si.sample_rate != layout.rate
        || si.channels != u32::from(layout.channels)
        || si.bits_per_sample != u32::from(layout.bits)
        || si.samples != Some(layout.frames())
    {
        return Err(verr(format!(
            "STREAMINFO says {} Hz, {} channels, {} bits, {:?} samples; the WAV has {} Hz, {} \
             channels, {} bits, {} samples",
            si.sample_rate,
            si.channels,
            si.bits_per_sample,
            si.samples,
            layout.rate,
            layout.channels,
            layout.bits,
            layout.frames()
        )));
    }
    let mut src = File::open(wav).map_err(rerr)?;
    src.seek(SeekFrom::Start(layout.data_offset))
        .map_err(rerr)?;
    let mut src = BufReader::with_capacity(
        1 << 16,
        src.take(layout.frames() * layout.frame_bytes() as u64),
    );
    let channels = usize::from(layout.channels);
    let bps = usize::from(layout.bits / 8);
    let mut frames = reader.blocks();
    let mut buffer = Vec::new();
    let mut raw = Vec::new();
    let mut seen = 0u64;
    loop {
        if !keep_going() {
            return Err(FlacError::Interrupted {
                path: flac.to_owned(),
            });
        }
        let block = frames
            .read_next_or_eof(std::mem::take(&mut buffer))
            .map_err(|e| verr(e.to_string()))?;
        let Some(block) = block else { break };
        let n = block.duration() as usize;
        raw.resize(n * channels * bps, 0);
        read_full(&mut src, &mut raw).map_err(rerr)?;
        for i in 0..n {
            for ch in 0..channels {
                let at = (i * channels + ch) * bps;
                let want = match bps {
                    2 => i32::from(i16::from_le_bytes([raw[at], raw[at + 1]])),
                    _ => i32::from_le_bytes([0, raw[at], raw[at + 1], raw[at + 2]]) >> 8,
                };
                let ch32 = u32::try_from(ch).unwrap_or(u32::MAX);
                let got = block.sample(ch32, u32::try_from(i).unwrap_or(u32::MAX));
                if got != want {
                    return Err(verr(format!(
                        "sample {} of channel {ch} decodes to {got}, the WAV holds {want}",
                        seen + i as u64
                    )));
                }
            }
        }
        seen += n as u64;
        buffer = block.into_buffer();
    }
    if seen != layout.frames() {
        return Err(verr(format!(
            "decoded {seen} samples, the WAV holds {}",
            layout.frames()
        )));
    }
    Ok(())
}

/// The GUANO text stored in a FLAC file's Vorbis comment, read with claxon.
///
/// # Errors
/// The file does not open as FLAC.
pub fn read_guano(flac: &Path) -> Result<Option<String>, FlacError> {
    let reader = claxon::FlacReader::open(flac).map_err(|e| FlacError::Verify {
        path: flac.to_owned(),
        message: e.to_string(),
    })?;
    Ok(reader.get_tag(GUANO_TAG).next().map(str::to_owned))
}
