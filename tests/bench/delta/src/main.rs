//! Measures delta-transfer candidates on one pair of real update inputs.
//!
//! `fleet-delta-bench OLD_IMAGE NEW_IMAGE OLD_BUNDLE NEW_BUNDLE` prints one tab-separated line per
//! method: `method  bytes  apply_cpu_s  apply_peak_mib` (apply figures only where this tool applies
//! the delta itself; the CLI peers are measured by bench.sh with /usr/bin/time).
//!
//! Methods:
//! - `rauc-block-index`: 4 KiB blocks of the new slot image whose SHA-256 is not among the old
//!   image's blocks, times 4 KiB: what RAUC's block-hash-index adaptive method would fetch (an
//!   estimate: RAUC reads them through the bundle's compressed squashfs, which rounds up).
//! - `zstd-patch-from-19`: the new bundle compressed with the old bundle as reference prefix
//!   (`zstd --patch-from --long` through the zstd crate), level 19, window over the whole file.
//! - `cdc-<avg>k`: FastCDC chunks of the new bundle (min avg/4, max avg*4); chunks whose hash the
//!   old bundle already has cost nothing, the others travel zstd-compressed (level 19), plus a
//!   40-byte index entry (hash, length, offset) per chunk of the new bundle.
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::Instant;

fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("unable to read {path}"))
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn block_index(old: &[u8], new: &[u8]) -> u64 {
    const BLOCK: usize = 4096;
    let have: HashSet<[u8; 32]> = old.chunks(BLOCK).map(sha).collect();
    new.chunks(BLOCK)
        .filter(|b| !have.contains(&sha(b)))
        .map(|b| b.len() as u64)
        .sum()
}

fn window_log(len: usize) -> u32 {
    // The smallest power of two that covers the reference and the new file, as `--long` needs.
    let mut log = 10;
    while (1usize << log) < len * 2 && log < 31 {
        log += 1;
    }
    log
}

fn zstd_patch(old: &[u8], new: &[u8]) -> Result<(u64, f64)> {
    use zstd::zstd_safe::{CParameter, DParameter};
    let wlog = window_log(old.len().max(new.len()));
    // A reference prefix is what `--patch-from` uses.
    let mut cctx = zstd::zstd_safe::CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(19))
        .map_err(code)?;
    cctx.set_parameter(CParameter::WindowLog(wlog))
        .map_err(code)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(code)?;
    cctx.ref_prefix(old).map_err(code)?;
    let mut patch = vec![0u8; zstd::zstd_safe::compress_bound(new.len())];
    let n = cctx.compress2(&mut patch[..], new).map_err(code)?;
    patch.truncate(n);
    // Apply it, as a station would.
    let started = Instant::now();
    let mut dctx = zstd::zstd_safe::DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(wlog))
        .map_err(code)?;
    dctx.ref_prefix(old).map_err(code)?;
    let mut rebuilt = vec![0u8; new.len()];
    let m = dctx.decompress(&mut rebuilt[..], &patch).map_err(code)?;
    let secs = started.elapsed().as_secs_f64();
    if m != new.len() || rebuilt != new {
        bail!("the zstd patch did not rebuild the new bundle byte for byte");
    }
    Ok((patch.len() as u64, secs))
}

fn code(e: usize) -> anyhow::Error {
    anyhow::anyhow!("zstd: {}", zstd::zstd_safe::get_error_name(e))
}

fn cdc(old: &[u8], new: &[u8], avg: u32) -> Result<(u64, f64)> {
    let (min, max) = (avg / 4, avg * 4);
    let have: HashSet<[u8; 32]> = fastcdc::v2020::FastCDC::new(old, min, avg, max)
        .map(|c| sha(&old[c.offset..c.offset + c.length]))
        .collect();
    let mut bytes = 0u64;
    let mut sent: HashSet<[u8; 32]> = HashSet::new();
    let mut missing: Vec<Vec<u8>> = Vec::new();
    for c in fastcdc::v2020::FastCDC::new(new, min, avg, max) {
        let data = &new[c.offset..c.offset + c.length];
        let h = sha(data);
        bytes += 40;
        if !have.contains(&h) && sent.insert(h) {
            let z = zstd::bulk::compress(data, 19)?;
            bytes += z.len() as u64;
            missing.push(z);
        }
    }
    // Applying: decompress the fetched chunks (the copies from the old bundle are I/O only).
    let started = Instant::now();
    for z in &missing {
        let _ = zstd::bulk::decompress(z, (avg * 4) as usize)?;
    }
    Ok((bytes, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [old_img, new_img, old_bundle, new_bundle] = args.as_slice() else {
        bail!("usage: fleet-delta-bench OLD_IMAGE NEW_IMAGE OLD_BUNDLE NEW_BUNDLE");
    };
    let (oi, ni) = (read(old_img)?, read(new_img)?);
    println!("rauc-block-index\t{}\t-\t-", block_index(&oi, &ni));
    drop((oi, ni));
    let (ob, nb) = (read(old_bundle)?, read(new_bundle)?);
    let (bytes, secs) = zstd_patch(&ob, &nb)?;
    println!("zstd-patch-from-19\t{bytes}\t{secs:.2}\t-");
    for avg in [16 * 1024, 64 * 1024] {
        let (bytes, secs) = cdc(&ob, &nb, avg)?;
        println!("cdc-{}k\t{bytes}\t{secs:.2}\t-", avg / 1024);
    }
    Ok(())
}
