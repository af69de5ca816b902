//! The daemon's own checker, run on the merged layers with the candidate pushed layer:
//! `<bin-dir>/fleet-<daemon> --config <image> --station-config <station> --pushed-config
//! <candidate> --check-config`, bounded in time and output.
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleet_core::config_push::Daemon;
use tokio::io::AsyncReadExt;

use super::ApplierConfig;

/// Longest a checker may run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of the checker's output kept for the report.
const MAX_OUTPUT: usize = 4096;

/// The checker's arguments for `daemon` with `candidate` as its pushed layer.
#[must_use]
pub fn argv(
    cfg: &ApplierConfig,
    daemon: Daemon,
    candidate: &Path,
) -> (std::path::PathBuf, Vec<String>) {
    let d = daemon.as_str();
    let program = cfg.bin_dir.join(format!("fleet-{d}"));
    let args = vec![
        "--config".to_owned(),
        cfg.image_dir
            .join(format!("{d}.toml"))
            .display()
            .to_string(),
        "--station-config".to_owned(),
        cfg.station_dir
            .join(format!("{d}.toml"))
            .display()
            .to_string(),
        "--pushed-config".to_owned(),
        candidate.display().to_string(),
        "--check-config".to_owned(),
    ];
    (program, args)
}

/// Runs the checker: `Ok(())` when it accepts (exit 0, or 3: valid but waiting for station
/// settings, which a push cannot give), `Err(why)` otherwise.
pub async fn run(cfg: &ApplierConfig, daemon: Daemon, candidate: &Path) -> Result<(), String> {
    let (program, args) = argv(cfg, daemon, candidate);
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("unable to run {}: {e}", program.display()))?;
    let mut stderr = child.stderr.take();
    let wait = async {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(MAX_OUTPUT as u64).read_to_end(&mut out).await;
        }
        (child.wait().await, out)
    };
    match tokio::time::timeout(CHECK_TIMEOUT, wait).await {
        Err(_) => Err(format!(
            "{} --check-config did not answer within {} s",
            program.display(),
            CHECK_TIMEOUT.as_secs()
        )),
        Ok((Err(e), _)) => Err(format!("unable to wait for {}: {e}", program.display())),
        Ok((Ok(status), out)) => match status.code() {
            Some(0 | 3) => Ok(()),
            code => {
                let text = String::from_utf8_lossy(&out);
                let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = last[last.len().saturating_sub(4)..].join("; ");
                Err(format!(
                    "fleet-{} --check-config exited {}: {tail}",
                    daemon.as_str(),
                    code.map_or_else(|| "by a signal".to_owned(), |c| c.to_string())
                ))
            }
        },
    }
}
