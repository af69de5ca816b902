//! WAV to FLAC, one frame at a time, and the proof that the FLAC decodes back to the WAV's samples.
//!
//! The encoder is `flacenc` and the decoder `claxon`, two independent implementations; this module
//! only moves samples between files and writes FLAC's metadata block headers. The GUANO text goes
//! into a Vorbis comment named `GUANO` (ADR 0007).
//!
//! Layout written: `fLaC`, STREAMINFO (reserved, filled in last), VORBIS_COMMENT (the last
//! metadata block), the frames. Memory stays at one block of samples and one encoded frame.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flacenc::component::{BitRepr, StreamInfo};
use flacenc::error::Verify;
use flacenc::source::{Context, Fill, FrameBuf};
use fleet_retentiond::wav::WavInfo;

/// Samples per FLAC frame (libFLAC's choice at `-5` and flacenc's default).
pub const BLOCK_SIZE: usize = 4096;
/// Largest LPC order, as `flac -5`.
pub const LPC_ORDER: usize = 8;
/// The Vorbis comment that carries the GUANO text.
pub const GUANO_TAG: &str = "GUANO";
/// The vendor string of the Vorbis comment block.
pub const VENDOR: &str = "fleet-uploaderd (flacenc)";
/// Bytes of `fLaC` plus the STREAMINFO block with its header.
const STREAMINFO_END: u64 = 4 + 4 + 34;

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
    /// The layout of an integer-PCM WAV FLAC can hold (16 or 24 bits; flacenc stops at 24), or why
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

/// The Vorbis comment block body: vendor, then `GUANO=<text>`.
#[must_use]
pub fn vorbis_comment(guano: &str) -> Vec<u8> {
    let entry = format!("{GUANO_TAG}={guano}");
    let mut b = Vec::with_capacity(16 + VENDOR.len() + entry.len());
    // Lengths are little-endian u32 (Vorbis), bounded by the GUANO chunk limit.
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    b.extend_from_slice(&len32(VENDOR.len()));
    b.extend_from_slice(VENDOR.as_bytes());
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
    let rerr = |source| FlacError::Read {
        path: wav.to_owned(),
        source,
    };
    let werr = |source| FlacError::Write {
        path: out.to_owned(),
        source,
    };
    let eerr = |message: String| FlacError::Encode {
        path: wav.to_owned(),
        message,
    };
    let mut config = flacenc::config::Encoder::default();
    config.block_size = BLOCK_SIZE;
    config.multithread = false;
    // flac -5's maximum LPC order (flacenc's default is 10: a little smaller, more CPU).
    config.subframe_coding.qlpc.lpc_order = LPC_ORDER;
    let config = config
        .into_verified()
        .map_err(|(_, e)| eerr(format!("{e:?}")))?;
    let channels = usize::from(layout.channels);
    let bits = usize::from(layout.bits);
    let bytes_per_sample = bits / 8;
    let rate = usize::try_from(layout.rate).unwrap_or(usize::MAX);
    let mut stream_info = stream_info(rate, channels, bits).map_err(eerr)?;

    let mut src = File::open(wav).map_err(rerr)?;
    src.seek(SeekFrom::Start(layout.data_offset))
        .map_err(rerr)?;
    let mut src = BufReader::with_capacity(
        1 << 16,
        src.take(layout.frames() * layout.frame_bytes() as u64),
    );

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    w.write_all(b"fLaC").map_err(werr)?;
    w.write_all(&block_header(false, 0, 34)).map_err(werr)?;
    w.write_all(&[0u8; 34]).map_err(werr)?;
    let comment = vorbis_comment(guano);
    w.write_all(&block_header(true, 4, comment.len()))
        .map_err(werr)?;
    w.write_all(&comment).map_err(werr)?;

    let mut fb = FrameBuf::with_size(channels, BLOCK_SIZE).map_err(|e| eerr(format!("{e:?}")))?;
    let mut ctx = Context::new(bits, channels);
    let mut raw = vec![0u8; BLOCK_SIZE * layout.frame_bytes()];
    let mut sink = flacenc::bitsink::ByteSink::new();
    let (mut min_frame, mut max_frame) = (usize::MAX, 0usize);
    let mut frame_number = 0usize;
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
        fb.fill_le_bytes(&raw[..n], bytes_per_sample)
            .map_err(|e| eerr(format!("{e:?}")))?;
        ctx.fill_le_bytes(&raw[..n], bytes_per_sample)
            .map_err(|e| eerr(format!("{e:?}")))?;
        let frame = flacenc::encode_fixed_size_frame(&config, &fb, frame_number, &stream_info)
            .map_err(|e| eerr(format!("{e:?}")))?;
        sink.clear();
        frame.write(&mut sink).map_err(|e| eerr(format!("{e:?}")))?;
        let bytes = sink.as_slice();
        w.write_all(bytes).map_err(werr)?;
        min_frame = min_frame.min(bytes.len());
        max_frame = max_frame.max(bytes.len());
        frame_number += 1;
    }
    if frame_number == 0 {
        return Err(FlacError::Unsupported {
            path: wav.to_owned(),
            reason: "the recording holds no samples".into(),
        });
    }
    stream_info
        // Fixed block size: the last, shorter block does not count (as libFLAC writes it).
        .set_block_sizes(BLOCK_SIZE, BLOCK_SIZE)
        .map_err(|e| eerr(format!("{e:?}")))?;
    stream_info
        .set_frame_sizes(min_frame, max_frame)
        .map_err(|e| eerr(format!("{e:?}")))?;
    stream_info.set_total_samples(ctx.total_samples());
    stream_info.set_md5_digest(&ctx.md5_digest());
    sink.clear();
    stream_info
        .write(&mut sink)
        .map_err(|e| eerr(format!("{e:?}")))?;
    if sink.as_slice().len() != 34 {
        return Err(eerr(format!(
            "STREAMINFO is {} bytes, not 34",
            sink.as_slice().len()
        )));
    }
    let mut file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    file.seek(SeekFrom::Start(STREAMINFO_END - 34))
        .map_err(werr)?;
    file.write_all(sink.as_slice()).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(())
}

/// flacenc 0.5's `StreamInfo::new` refuses rates above 96 kHz, which the FLAC format does not
/// (STREAMINFO holds 20 bits; frame headers carry 384 kHz as tens of Hz). Above 96 kHz the
/// STREAMINFO is built at 96 kHz and its rate replaced through flacenc's own serde
/// representation; the frames then carry the real rate, and the decode check (and `flac -t` in
/// the tests) proves the result.
fn stream_info(rate: usize, channels: usize, bits: usize) -> Result<StreamInfo, String> {
    if rate <= 96_000 {
        return StreamInfo::new(rate, channels, bits).map_err(|e| format!("{e:?}"));
    }
    let base = StreamInfo::new(96_000, channels, bits).map_err(|e| format!("{e:?}"))?;
    let mut v = serde_json::to_value(&base).map_err(|e| e.to_string())?;
    let field = v
        .get_mut("sample_rate")
        .ok_or_else(|| "flacenc's StreamInfo has no sample_rate field".to_owned())?;
    *field = serde_json::Value::from(rate);
    serde_json::from_value(v).map_err(|e| e.to_string())
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
