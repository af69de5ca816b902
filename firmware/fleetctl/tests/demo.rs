//! The README's first command, end to end: `fleetctl demo` must keep working.
use std::process::Command;

#[test]
fn the_demo_updates_three_stations_rolls_one_back_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .arg("demo")
        .env_remove("FLEETCTL_LOG")
        .output()
        .expect("run fleetctl demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary = stdout
        .lines()
        .rfind(|l| l.starts_with("demo: ") && l.contains(" updated to "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(
        summary.starts_with(
            "demo: 3 updated to 1.1.0, 1 rolled back (health check failed: sim-fail-file"
        ) && summary.contains(", 0 failed"),
        "{summary}"
    );
    // The fallback is shown as it happens, not only in the summary.
    assert!(
        stdout.contains("stn-04  HEALTH CHECK FAILED on slot B"),
        "{stdout}"
    );
    assert!(stdout.contains("stn-01  committed slot B"), "{stdout}");
    // The fleet's health next to the update: stn-01's microphone is flagged silent.
    assert!(stdout.contains("stn-01: silent-microphone"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("demo: fleetctl status"))
        .skip(1)
        .take_while(|l| !l.starts_with("demo: "))
        .collect();
    assert!(
        table
            .iter()
            .any(|l| l.trim_start().starts_with("stn-01 ") && l.contains("SILENT")),
        "no status row for stn-01 with SILENT in:\n{stdout}"
    );
    assert!(
        table.iter().all(|l| l.chars().count() <= 100),
        "the status table fits 100 columns:\n{}",
        table.join("\n")
    );
    // The temp directory is gone.
    let dir = stdout
        .lines()
        .find_map(|l| l.split("work directory ").nth(1))
        .unwrap_or_else(|| panic!("no work directory in:\n{stdout}"));
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} was left behind"
    );
}
