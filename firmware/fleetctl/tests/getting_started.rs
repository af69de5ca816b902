//! docs/getting-started.md as a journey: its operator-side commands (the `sh journey` blocks) and
//! its fleet definition (the `toml fleet` block) run here in order, with this build's `fleetctl`
//! on PATH and a temporary directory as the mounted card. The steps that need a Yocto build, a
//! broker host or a station (kas, mosquitto, bmaptool, the serial console) are run by their own
//! suites: tests/layer/, fleetctl's provision tests, the QEMU harness.
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
enum Step {
    Run(String),
    WriteFleet(String),
}

fn steps(doc: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in doc.lines() {
        match &mut cur {
            None => {
                if let Some(info) = line.trim().strip_prefix("```")
                    && (info == "sh journey" || info == "toml fleet")
                {
                    cur = Some((info.to_owned(), String::new()));
                }
            }
            Some((info, body)) => {
                if line.trim() == "```" {
                    out.push(if info == "sh journey" {
                        Step::Run(std::mem::take(body))
                    } else {
                        Step::WriteFleet(std::mem::take(body))
                    });
                    cur = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn the_operator_side_of_getting_started_runs_as_written() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/getting-started.md");
    let doc = std::fs::read_to_string(&doc_path).expect("getting-started.md");
    let steps = steps(&doc);
    assert!(
        steps.iter().filter(|s| matches!(s, Step::Run(_))).count() >= 2,
        "{steps:?}"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let card = work.path().join("card");
    std::fs::create_dir(&card).expect("card");
    let bin: PathBuf = Path::new(env!("CARGO_BIN_EXE_fleetctl"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in &steps {
        match step {
            Step::WriteFleet(text) => {
                std::fs::create_dir_all(work.path().join("fleet")).expect("fleet dir");
                std::fs::write(work.path().join("fleet/fleet.toml"), text).expect("fleet.toml");
            }
            Step::Run(script) => {
                let out = Command::new("bash")
                    .args(["-euo", "pipefail", "-c", script])
                    .current_dir(work.path())
                    .env("PATH", &path)
                    .env("CARD", &card)
                    .output()
                    .expect("bash");
                assert!(
                    out.status.success(),
                    "step failed:\n{script}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if script.contains("provision --check") {
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    assert!(stdout.contains("ready for station stn-0042"), "{stdout}");
                }
            }
        }
    }
    let folder = card.join("fleet-provision");
    for f in [
        "device-id",
        "updated.toml",
        "recorderd.toml",
        "mqtt/client.key",
    ] {
        assert!(folder.join(f).exists(), "{f} missing from the card");
    }
}
