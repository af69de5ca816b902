//! Measures delta-transfer candidates on one pair of real update inputs.
//!
//! `fleet-delta-bench OLD_IMAGE NEW_IMAGE OLD_BUNDLE NEW_BUNDLE` prints one tab-separated line per
//! method: `method  bytes  apply_cpu_s  apply_peak_mib` (apply figures only where this tool applies
//! the delta itself; the CLI peers are measured by bench.sh with /usr/bin/time).
//!
//! The product's own code, each step a command of its own so bench.sh measures it with
//! /usr/bin/time like the peers:
//! - `fleet-delta-bench patch BASE BUNDLE DIR`: fleetctl's patch (`fleetctl::delta::make_patch`,
//!   what `fleetctl push --delta-from` publishes); prints its path and size.
//! - `fleet-delta-bench compress BUNDLE DIR`: fleetctl's compressed full transfer
//!   (`fleetctl::delta::make_compressed`); prints its path and size.
//! - `fleet-delta-bench apply BASE|- FILE OUT`: the station's rebuild
//!   (`fleet_updated::rebuild::rebuild`, memory-mapped; `-`: no base, a compressed bundle).
//!
//! Methods:
//! - `rauc-block-index`: 4 KiB blocks of the new slot image whose SHA-256 is not among the old
//!   image's blocks, times 4 KiB: what RAUC's block-hash-index adaptive method would fetch (an
//!   estimate: RAUC reads them through the bundle's compressed squashfs, which rounds up).
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

fn product(args: &[String]) -> Result<bool> {
    use std::path::Path;
    match args {
        [cmd, base, bundle, dir] if cmd == "patch" => {
            let made =
                fleetctl::delta::make_patch(Path::new(base), Path::new(bundle), Path::new(dir))?;
            println!("{}\t{}", made.path.display(), made.patch_size);
        }
        [cmd, bundle, dir] if cmd == "compress" => {
            let made = fleetctl::delta::make_compressed(
                Path::new(bundle),
                Path::new(dir),
                &mut |_, _| {},
            )?;
            println!("{}\t{}", made.path.display(), made.file_size);
        }
        [cmd, base, file, out] if cmd == "apply" => {
            let base = (base != "-").then(|| Path::new(base));
            let done = fleet_updated::rebuild::rebuild(
                base,
                Path::new(file),
                Path::new(out),
                31,
                1 << 34,
            )?;
            println!("{}\t{}", out, done.size);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if product(&args)? {
        return Ok(());
    }
    let [old_img, new_img, old_bundle, new_bundle] = args.as_slice() else {
        bail!("usage: fleet-delta-bench OLD_IMAGE NEW_IMAGE OLD_BUNDLE NEW_BUNDLE");
    };
    let (oi, ni) = (read(old_img)?, read(new_img)?);
    println!("rauc-block-index\t{}\t-\t-", block_index(&oi, &ni));
    drop((oi, ni));
    let (ob, nb) = (read(old_bundle)?, read(new_bundle)?);
    for avg in [16 * 1024, 64 * 1024] {
        let (bytes, secs) = cdc(&ob, &nb, avg)?;
        println!("cdc-{}k\t{bytes}\t{secs:.2}\t-", avg / 1024);
    }
    Ok(())
}
