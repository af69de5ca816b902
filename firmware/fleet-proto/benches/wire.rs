//! Prints throughput of the wire-format work a station and `fleetctl` do per bundle: building a
//! manifest (one SHA-256 pass plus per-chunk hashes), checking every chunk, checking the whole
//! file, and opening signed envelopes. Run: `cargo bench -p fleet-proto --bench wire`.
use std::hint::black_box;
use std::time::Instant;

use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::update::{Downgrade, Offer, RolloutPercent, Target};
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::{Limits, chunk};

const MIB: usize = 1024 * 1024;

fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

fn main() {
    let size = 64 * MIB;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let limits = Limits::DEFAULT;

    let t = Instant::now();
    let m = chunk::build_manifest(
        &data[..],
        fleet_proto::DEFAULT_CHUNK_SIZE,
        "fleet-bench",
        Version::new(1, 0, 0),
        "bench.raucb",
        &limits,
    )
    .expect("builds");
    let build = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for (i, c) in chunk::split(&data, m.chunk_size).enumerate() {
        chunk::verify_chunk(&m, u32::try_from(i).expect("few chunks"), c).expect("verifies");
    }
    let chunks = t.elapsed().as_secs_f64();

    let t = Instant::now();
    chunk::verify_bundle(&data[..], &m.bundle_id, m.size).expect("verifies");
    let whole = t.elapsed().as_secs_f64();

    let key = SigningKey::from_bytes(&[1; 32]);
    let trusted: TrustedKeys = [key.verifying_key()].into_iter().collect();
    let offer = Offer {
        update_id: UpdateId::new("bench").expect("valid"),
        sequence: 1,
        bundle_id: m.bundle_id,
        bundle_size: m.size,
        compatible: "fleet-bench".into(),
        version: Version::new(1, 0, 0),
        downgrade: Downgrade::Refuse,
        target: Target::Device(DeviceId::new("stn-1").expect("valid")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 0,
        expires_at: None,
        manifest_hash: None,
    };
    let sealed = envelope::seal_json(Kind::Offer, &offer, &key).expect("seals");
    let manifest_env = envelope::seal_json(Kind::Manifest, &m, &key).expect("seals");
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(
            envelope::open_json::<Offer>(&sealed, Kind::Offer, &trusted, &limits).expect("opens"),
        );
    }
    let open = t.elapsed().as_secs_f64() / f64::from(n);
    // The largest signed payload a station parses (strictly: typed, then checked for nulls).
    let n_manifest = 50;
    let t = Instant::now();
    for _ in 0..n_manifest {
        black_box(
            envelope::open_json::<fleet_proto::BundleManifest>(
                &manifest_env,
                Kind::Manifest,
                &trusted,
                &limits,
            )
            .expect("opens"),
        );
    }
    let open_manifest = t.elapsed().as_secs_f64() / f64::from(n_manifest);
    // For comparison: a plain serde_json parse of the same manifest, no signature, no checks.
    let manifest_json = serde_json::to_vec(&m).expect("serializes");
    let t = Instant::now();
    for _ in 0..n_manifest {
        black_box(
            serde_json::from_slice::<fleet_proto::BundleManifest>(&manifest_json).expect("parses"),
        );
    }
    let plain_manifest = t.elapsed().as_secs_f64() / f64::from(n_manifest);

    println!(
        "bundle {} MiB, {} chunks of {} KiB",
        size / MIB,
        m.chunks.len(),
        m.chunk_size / 1024
    );
    println!(
        "build manifest (read + hash)   {:8.1} MiB/s",
        rate(size, build)
    );
    println!(
        "verify every chunk             {:8.1} MiB/s",
        rate(size, chunks)
    );
    println!(
        "verify whole bundle            {:8.1} MiB/s",
        rate(size, whole)
    );
    println!(
        "open signed offer              {:8.1} us/offer ({} bytes)",
        open * 1e6,
        sealed.len()
    );
    println!(
        "open signed manifest (64 MiB)  {:8.1} us/manifest ({} bytes)",
        open_manifest * 1e6,
        manifest_env.len()
    );
    println!(
        "plain JSON parse, same manifest {:7.1} us/manifest",
        plain_manifest * 1e6
    );
    println!(
        "manifest envelope for 64 MiB   {:8} bytes (limit {})",
        manifest_env.len(),
        limits.max_manifest_bytes
    );
}
