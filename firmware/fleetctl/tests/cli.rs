//! Every bad command line gets a clear error and exit code 2, before any broker is needed.
use std::path::Path;
use std::process::{Command, Output};

fn fleetctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .current_dir(cwd)
        // Nothing listens on port 1: a command that got as far as the broker would fail with 1.
        .env("FLEET_BROKER", "mqtt://127.0.0.1:1")
        .env_remove("FLEET_SIGNING_KEY")
        .output()
        .expect("run fleetctl")
}

fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

struct Dir {
    tmp: tempfile::TempDir,
}

fn setup() -> Dir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = fleetctl(&["keys", "gen", "--name", "k"], tmp.path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("key id:"));
    std::fs::write(tmp.path().join("b.bin"), b"bundle bytes").expect("bundle");
    Dir { tmp }
}

fn push_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["push", "--key", "k.key.pem", "--compatible", "fleet-sim"];
    v.extend_from_slice(extra);
    v
}

#[test]
fn a_missing_bundle_is_named_in_the_error() {
    let d = setup();
    let out = fleetctl(
        &push_args(&["nope.bin", "--to", "group:g", "--version", "1.0.0"]),
        d.tmp.path(),
    );
    assert_refused(&out, "nope.bin");
}

#[test]
fn a_bundle_over_the_size_limit_is_refused() {
    let d = setup();
    // A sparse file just over the 2 GiB limit: its size is refused before a byte is read.
    let f = std::fs::File::create(d.tmp.path().join("huge.bin")).expect("create");
    f.set_len(2 * 1024 * 1024 * 1024 + 1).expect("sparse");
    let out = fleetctl(
        &push_args(&["huge.bin", "--to", "group:g", "--version", "1.0.0"]),
        d.tmp.path(),
    );
    assert_refused(&out, "above the limit");
}

#[test]
fn a_malformed_target_is_refused() {
    let d = setup();
    for bad in ["stn-1", "host:stn-1", "device:STN", "group:a/b"] {
        let out = fleetctl(
            &push_args(&["b.bin", "--to", bad, "--version", "1.0.0"]),
            d.tmp.path(),
        );
        assert_refused(&out, &format!("unable to parse target {bad:?}"));
    }
}

#[test]
fn a_version_that_is_not_semver_is_refused() {
    let d = setup();
    let out = fleetctl(
        &push_args(&["b.bin", "--to", "group:g", "--version", "1.2"]),
        d.tmp.path(),
    );
    assert_refused(&out, "--version");
}

#[test]
fn an_unreadable_or_invalid_key_is_refused() {
    let d = setup();
    let out = fleetctl(
        &[
            "push",
            "b.bin",
            "--to",
            "group:g",
            "--version",
            "1.0.0",
            "--compatible",
            "x",
            "--key",
            "missing.pem",
        ],
        d.tmp.path(),
    );
    assert_refused(&out, "missing.pem");
    let out = fleetctl(
        &[
            "push",
            "b.bin",
            "--to",
            "group:g",
            "--version",
            "1.0.0",
            "--compatible",
            "x",
            "--key",
            "k.pub",
        ],
        d.tmp.path(),
    );
    assert_refused(&out, "not a PKCS#8 PEM ed25519 private key");
}

#[test]
fn a_rollout_percentage_outside_1_to_100_is_refused() {
    let d = setup();
    for bad in ["0", "101"] {
        let out = fleetctl(
            &push_args(&[
                "b.bin",
                "--to",
                "group:g",
                "--version",
                "1.0.0",
                "--percent",
                bad,
            ]),
            d.tmp.path(),
        );
        assert_refused(&out, "--percent");
    }
}

#[test]
fn keys_gen_refuses_to_overwrite_a_key() {
    let d = setup();
    let out = fleetctl(&["keys", "gen", "--name", "k"], d.tmp.path());
    assert_refused(&out, "already exists");
}

#[test]
fn an_unreachable_broker_fails_with_exit_code_1_and_its_address() {
    let d = setup();
    let out = fleetctl(
        &push_args(&["b.bin", "--to", "group:g", "--version", "1.0.0"]),
        d.tmp.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn a_chunk_size_outside_the_limits_is_refused() {
    let d = setup();
    let out = fleetctl(
        &push_args(&[
            "b.bin",
            "--to",
            "group:g",
            "--version",
            "1.0.0",
            "--chunk-size",
            "100",
        ]),
        d.tmp.path(),
    );
    assert_refused(&out, "chunk-size 100 is outside");
    // 2 GiB in 4 KiB chunks is far more than 8192 chunks: refused before hashing.
    let f = std::fs::File::create(d.tmp.path().join("big.bin")).expect("create");
    f.set_len(1024 * 1024 * 1024).expect("sparse");
    let out = fleetctl(
        &push_args(&[
            "big.bin",
            "--to",
            "group:g",
            "--version",
            "1.0.0",
            "--chunk-size",
            "4096",
        ]),
        d.tmp.path(),
    );
    assert_refused(&out, "above the limit of 8192 chunks");
}
