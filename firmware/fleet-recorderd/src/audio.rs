//! Per-segment audio figures: RMS and peak level in dBFS, the fraction of clipped samples, the
//! DC offset and a flat-line flag, which catch a dead, unplugged or saturated microphone that
//! would otherwise record silence, a constant level or a clipped signal for months.
//!
//! The meter runs on the writer thread over the bytes it writes, in one pass of integer
//! arithmetic per sample (samples are taken at 16-bit resolution: a 32-bit sample's top 16
//! bits), so its cost stays within the recorder benchmark's budget
//! (`tests/bench/recorder.sh`). Every channel counts alike.
use std::fmt::Write as _;

use fleet_core::health::{AudioFigures, SILENCE_DBFS};

use crate::capture::SampleFormat;

/// A segment whose AC level (RMS around its mean) is below this is flat: digital silence, a
/// constant DC level, or a flat line. A working microphone's self-noise sits far above it.
pub const FLAT_DBFS: f32 = -90.0;

/// Samples beyond these (16-bit scale) count as clipped: those at full scale or one step
/// inside it (32766, 32767, -32767, -32768), where converters and clippers stop.
const CLIP_HIGH: i16 = i16::MAX - 2;
const CLIP_LOW: i16 = i16::MIN + 2;

/// Sums over one segment.
#[derive(Debug, Clone, Copy)]
pub struct AudioMeter {
    format: SampleFormat,
    count: u64,
    sum: i64,
    /// Sum of squares (16-bit scale), accumulated per block in f32 lanes and summed in f64:
    /// relative error below 1e-6, far below what a dB figure shows.
    sum_sq: f64,
    peak: u32,
    clipped: u64,
}

/// Independent accumulators the inner loop keeps, so the compiler can use vector registers.
const LANES: usize = 16;
/// Samples per block: per-lane i32 sums and u16 counts cannot overflow within one.
const BLOCK_SAMPLES: usize = 4096;

impl AudioMeter {
    #[must_use]
    pub fn new(format: SampleFormat) -> Self {
        Self {
            format,
            count: 0,
            sum: 0,
            sum_sq: 0.0,
            peak: 0,
            clipped: 0,
        }
    }

    /// Starts a new segment.
    pub fn reset(&mut self) {
        *self = Self::new(self.format);
    }

    /// Adds interleaved little-endian samples (any trailing partial sample is ignored).
    pub fn add(&mut self, bytes: &[u8]) {
        match self.format {
            SampleFormat::S16 => self.add_width::<2>(bytes),
            SampleFormat::S32 => self.add_width::<4>(bytes),
        }
    }

    /// `W` bytes per sample; the sample's top 16 bits are its last two bytes.
    fn add_width<const W: usize>(&mut self, bytes: &[u8]) {
        let top = |c: &[u8], i: usize| i16::from_le_bytes([c[W * i + W - 2], c[W * i + W - 1]]);
        let clip = |x: i16| !(CLIP_LOW..=CLIP_HIGH).contains(&x);
        for block in bytes.chunks(BLOCK_SAMPLES * W) {
            let mut sum = [0i32; LANES];
            let mut sq = [0f32; LANES];
            let mut lo = [i16::MAX; LANES];
            let mut hi = [i16::MIN; LANES];
            let mut cl = [0u16; LANES];
            let mut frames = block.chunks_exact(LANES * W);
            for c in &mut frames {
                for l in 0..LANES {
                    let x = top(c, l);
                    let f = f32::from(x);
                    sum[l] += i32::from(x);
                    sq[l] += f * f;
                    lo[l] = lo[l].min(x);
                    hi[l] = hi[l].max(x);
                    cl[l] += u16::from(clip(x));
                }
            }
            let rest = frames.remainder();
            let n_rest = rest.len() / W;
            let mut s: i64 = sum.iter().map(|v| i64::from(*v)).sum();
            let mut q: f64 = sq.iter().map(|v| f64::from(*v)).sum();
            let mut min = lo.iter().copied().min().unwrap_or(i16::MAX);
            let mut max = hi.iter().copied().max().unwrap_or(i16::MIN);
            let mut k: u64 = cl.iter().map(|v| u64::from(*v)).sum();
            for i in 0..n_rest {
                let x = top(rest, i);
                s += i64::from(x);
                q += f64::from(x) * f64::from(x);
                min = min.min(x);
                max = max.max(x);
                k += u64::from(clip(x));
            }
            let n = (block.len() / W) as u64;
            if n == 0 {
                continue;
            }
            self.count += n;
            self.sum += s;
            self.sum_sq += q;
            self.peak = self
                .peak
                .max(u32::from(min.unsigned_abs()))
                .max(u32::from(max.unsigned_abs()));
            self.clipped += k;
        }
    }

    /// The figures, `None` before any sample.
    #[must_use]
    pub fn figures(&self) -> Option<AudioFigures> {
        if self.count == 0 {
            return None;
        }
        let full = 32768.0f64;
        let n = self.count as f64;
        let mean = self.sum as f64 / n;
        let mean_sq = self.sum_sq / n;
        let variance = (mean_sq - mean * mean).max(0.0);
        let db = |amplitude: f64| -> f32 {
            if amplitude <= 0.0 {
                SILENCE_DBFS
            } else {
                ((20.0 * (amplitude / full).log10()) as f32).clamp(SILENCE_DBFS, 0.0)
            }
        };
        Some(AudioFigures {
            rms_dbfs: db(mean_sq.sqrt()),
            peak_dbfs: db(f64::from(self.peak)),
            clipped_fraction: (self.clipped as f64 / n) as f32,
            dc_offset: (mean / full).clamp(-1.0, 1.0) as f32,
            flat: db(variance.sqrt()) < FLAT_DBFS,
        })
    }
}

/// The GUANO lines a closed segment carries.
#[must_use]
pub fn guano_lines(a: &AudioFigures) -> String {
    let mut s = String::with_capacity(160);
    let _ = writeln!(s, "FLEET|RMS dBFS: {:.2}", a.rms_dbfs);
    let _ = writeln!(s, "FLEET|Peak dBFS: {:.2}", a.peak_dbfs);
    let _ = writeln!(s, "FLEET|Clipped Fraction: {:.6}", a.clipped_fraction);
    let _ = writeln!(s, "FLEET|DC Offset: {:.6}", a.dc_offset);
    let _ = writeln!(s, "FLEET|Flat: {}", a.flat);
    s
}

/// The longest [`guano_lines`] can be.
pub const MAX_GUANO_LINES_LEN: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    fn s16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn figures(samples: &[i16]) -> AudioFigures {
        let mut m = AudioMeter::new(SampleFormat::S16);
        m.add(&s16(samples));
        m.figures().expect("samples were added")
    }

    #[test]
    fn silence_a_dc_level_a_sine_and_a_clipped_square_get_their_figures() {
        let silence = figures(&[0; 4800]);
        assert_eq!(silence.rms_dbfs, SILENCE_DBFS);
        assert!(silence.flat);

        let dc = figures(&[8192; 4800]);
        assert!(dc.flat, "a constant level is flat");
        assert!((dc.dc_offset - 0.25).abs() < 1e-6);
        assert!((dc.rms_dbfs - -12.04).abs() < 0.01);

        // A full-period sine at -20 dBFS peak: RMS 3.01 dB lower.
        let amp = 32768.0 * 0.1;
        let sine: Vec<i16> = (0..48_000)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 48_000.0).sin())
                    .round() as i16
            })
            .collect();
        let f = figures(&sine);
        assert!((f.peak_dbfs - -20.0).abs() < 0.01, "{f:?}");
        assert!((f.rms_dbfs - -23.01).abs() < 0.02, "{f:?}");
        assert!(!f.flat && f.clipped_fraction == 0.0 && f.dc_offset.abs() < 1e-4);

        let square: Vec<i16> = (0..4800)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let c = figures(&square);
        assert_eq!(c.clipped_fraction, 1.0);
        assert!(c.peak_dbfs > -0.01);
    }

    #[test]
    fn thirty_two_bit_samples_are_measured_at_sixteen_bit_resolution() {
        let mut m = AudioMeter::new(SampleFormat::S32);
        let bytes: Vec<u8> = [i32::MAX, i32::MIN, 1 << 28, 0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        m.add(&bytes);
        let f = m.figures().expect("samples");
        assert_eq!(f.clipped_fraction, 0.5);
        m.reset();
        assert!(m.figures().is_none());
    }

    #[test]
    fn the_guano_lines_fit_their_reserved_room() {
        let worst = AudioFigures {
            rms_dbfs: -200.0,
            peak_dbfs: -200.0,
            clipped_fraction: 1.0,
            dc_offset: -1.0,
            flat: false,
        };
        assert!(guano_lines(&worst).len() <= MAX_GUANO_LINES_LEN);
        assert!(guano_lines(&worst).contains("FLEET|RMS dBFS: -200.00\n"));
    }
}
