//! `fleet`: recovery CLI of a fleet station, for a person at the serial console (115200 baud).
//! Plain lines of at most 80 columns, no colour. See `docs/recovery-guide.md`.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage or invalid configuration, 3 refused for safety or
//! not confirmed (nothing was changed).
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use fleet::bundle::{self, BundleError, BundleFormat};
use fleet::config::{Config, DEFAULT_CONFIG_PATH, Overrides, Profile};
use fleet::limits::{CALL_TIMEOUT, CONNECT_TIMEOUT, MAX_LOG_LINES};
use fleet::pending::{self, Pending};
use fleet::system::{self, DaemonStates, SlotContent};
use fleet::text::{self, row};
use fleet::{EXIT_FAILED, EXIT_REFUSED, EXIT_USAGE, reset};

// The NVMe admin-command ioctl: the only unsafe code, confined to this module.
#[allow(unsafe_code)]
mod nvme_ioctl;
use fleet_core::ports::{BootControl, BootStatus, InstallProgress, InstallRequest};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_rauc::{ManifestHashCheck, MarkState, RaucClient, RaucError, RaucOptions, RaucStatus};

#[derive(Debug, Parser)]
#[command(
    name = "fleet",
    version,
    about = "Recovery console of a fleet station: status, rollback, install from a file",
    after_help = "Exit codes: 0 done, 1 failed, 2 bad usage or configuration,\n\
                  3 refused for safety or not confirmed (nothing changed).\n\
                  Guide: docs/recovery-guide.md"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, env = "FLEET_CONFIG")]
    config: Option<PathBuf>,
    /// Data partition mount point.
    #[arg(long, env = "FLEET_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// fleet-bootctl's configuration file.
    #[arg(long, env = "FLEET_BOOTCTL_CONFIG")]
    bootctl_config: Option<PathBuf>,
    /// D-Bus address of RAUC's bus.
    #[arg(long, env = "FLEET_DBUS_ADDRESS")]
    dbus_address: Option<String>,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Booted slot, both slots, pending update, disk and daemons.
    Status,
    /// Make the other slot primary, if it is good (then reboot).
    Rollback {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Install a bundle file into the other slot (RAUC verifies it).
    Install { bundle: PathBuf },
    /// Commit the running slot (the only slot that can be marked good).
    MarkGood {
        /// A or B; the running slot when left out.
        slot: Option<Slot>,
    },
    /// Mark a slot bad: it does not boot again until a new install.
    MarkBad {
        slot: Slot,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Recent journal of the fleet daemons.
    Logs {
        /// Lines to show.
        #[arg(short = 'n', long)]
        lines: Option<u32>,
    },
    /// NVMe drives' wear from their SMART logs (needs root).
    NvmeSmart {
        /// Also write <DIR>/<nvmeN>.json for the health reporter (fleet-nvme-smart.service)
        /// and remove the files of drives that are gone.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
        /// Where the controllers are listed (sysfs).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "/sys/class/nvme",
            hide = true
        )]
        sys_class: PathBuf,
        /// Where their character devices are.
        #[arg(long, value_name = "DIR", default_value = "/dev", hide = true)]
        dev: PathBuf,
    },
    /// Erase the station's data (keeps its identity unless --all).
    FactoryReset {
        /// Also erase the identity (station id, credentials).
        #[arg(long)]
        all: bool,
        /// The station id, instead of typing it at the prompt.
        #[arg(long, value_name = "STATION-ID")]
        confirm: Option<String>,
    },
}

/// How a command ends when it does not succeed.
#[derive(Debug)]
enum Failure {
    /// Exit 1.
    Failed(anyhow::Error),
    /// Exit 2.
    Usage(anyhow::Error),
    /// Exit 3: refused for safety or not confirmed; nothing was changed.
    Refused(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

type Outcome = Result<(), Failure>;

fn say(label: &str, value: &str) {
    println!("{}", row(label, value));
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Asks a question and reads one line from stdin (empty at end of input).
fn ask(question: &str) -> String {
    for line in text::wrap(question, text::WIDTH) {
        println!("{line}");
    }
    print!("> ");
    flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    answer.trim().to_owned()
}

fn confirmed(question: &str) -> bool {
    matches!(ask(question).as_str(), "yes" | "y" | "YES")
}

fn load_boot(cfg: &Config) -> Result<fleet_bootctl::Config, Failure> {
    fleet_bootctl::Config::load(&cfg.bootctl_config).map_err(|e| Failure::Usage(e.into()))
}

fn boot_status(boot: &fleet_bootctl::Config) -> Result<BootStatus, Failure> {
    boot.status()
        .context("unable to read the boot flow")
        .map_err(Failure::Failed)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("unable to start the async runtime")
        .map_err(Failure::Failed)
}

fn rauc_options(cfg: &Config) -> RaucOptions {
    let mut options = RaucOptions {
        slot_class: cfg.rauc_slot_class.clone(),
        // A file install has no offer, so no manifest hash is ever passed.
        manifest_hash: ManifestHashCheck::Enforce,
        ..RaucOptions::default()
    };
    // A person is waiting: a RAUC that does not answer a status call quickly is stuck.
    options.limits.call_timeout = CALL_TIMEOUT;
    options
}

async fn rauc_client_with(cfg: &Config, options: RaucOptions) -> Result<RaucClient, RaucError> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        RaucClient::connect(&cfg.dbus_address, options),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(RaucError::CallTimedOut {
            method: "Hello (connect to the bus)",
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

async fn rauc_client(cfg: &Config) -> Result<RaucClient, RaucError> {
    rauc_client_with(cfg, rauc_options(cfg)).await
}

/// RAUC's view, or why it is unavailable.
fn rauc_status(rt: &tokio::runtime::Runtime, cfg: &Config) -> Result<RaucStatus, String> {
    rt.block_on(async {
        let client = rauc_client(cfg).await?;
        client.status().await
    })
    .map_err(|e| format!("{e}"))
}

fn health_word(h: SlotHealth) -> &'static str {
    match h {
        SlotHealth::Good => "good",
        SlotHealth::Trial => "trial",
        SlotHealth::Bad => "bad",
    }
}

/// What a slot holds: RAUC's record of the last install, else the running image's
/// os-release, else whether the device has a file system at all.
fn slot_version(cfg: &Config, rauc: Option<&RaucStatus>, slot: Slot, booted: Slot) -> String {
    let record = rauc.and_then(|r| r.slots.get(slot).ok());
    if let Some(v) = record.and_then(|s| s.bundle_version.clone()) {
        return v;
    }
    if slot == booted {
        if let Some(v) = system::os_version(&cfg.os_release) {
            return format!("{v} (image)");
        }
        return "unknown".to_owned();
    }
    match record.map(|s| system::slot_content(Path::new(&s.device))) {
        Some(Ok(SlotContent::Empty)) => "empty".to_owned(),
        Some(Ok(SlotContent::FileSystem)) => "not recorded".to_owned(),
        Some(Err(_)) | None => "unknown".to_owned(),
    }
}

fn status(cfg: &Config) -> Outcome {
    let rt = runtime()?;
    let mut failed = None;
    match system::station_id(&cfg.identity_file) {
        Some(id) => say("station", &id),
        None => say(
            "station",
            &format!(
                "unknown: not provisioned ({} unreadable)",
                cfg.identity_file.display()
            ),
        ),
    }
    let rauc = rauc_status(&rt, cfg);
    let boot = fleet_bootctl::Config::load(&cfg.bootctl_config)
        .map_err(anyhow::Error::from)
        .and_then(|b| {
            let s = b.status().context("unable to read the boot flow")?;
            Ok((b, s))
        });
    match &boot {
        Ok((b, s)) => {
            say(
                "boot",
                &format!(
                    "{} flow, running {}, next boot {}",
                    b.flow_name(),
                    s.booted,
                    s.primary
                ),
            );
            for slot in Slot::ALL {
                let st = s.slot(slot);
                let mut notes = Vec::new();
                if slot == s.booted {
                    notes.push("running".to_owned());
                }
                if slot == s.primary {
                    notes.push("next boot".to_owned());
                }
                if st.health == SlotHealth::Trial {
                    notes.push(format!("{} attempts left", st.attempts_left));
                }
                if let Some(rec) = rauc.as_ref().ok().and_then(|r| r.slots.get(slot).ok())
                    && let Some(install) = rec.status.as_deref().filter(|x| *x != "ok")
                {
                    notes.push(format!("last install {install}"));
                }
                let version = slot_version(cfg, rauc.as_ref().ok(), slot, s.booted);
                say(
                    &format!("slot {slot}"),
                    &format!(
                        "{:<6} {:<18} {}",
                        health_word(st.health),
                        version,
                        notes.join(", ")
                    ),
                );
            }
            if let Ok(r) = &rauc
                && r.booted != s.booted
            {
                say(
                    "warning",
                    &format!(
                        "rauc says slot {} runs, the boot flow says {}",
                        r.booted, s.booted
                    ),
                );
            }
        }
        Err(e) => {
            say("boot", &format!("unreadable: {e:#}"));
            failed = Some(anyhow!("unable to read the boot flow"));
        }
    }
    match &rauc {
        Ok(r) => {
            say(
                "rauc",
                &format!("{}, compatible {}", r.operation, r.compatible),
            );
            if !r.last_error.is_empty() {
                say("", &format!("last error: {}", r.last_error));
            }
        }
        Err(e) => say("rauc", &format!("unreachable: {e}")),
    }
    match pending::read(&cfg.data_root) {
        Pending::NoJournal => say("update", "none (no updater journal)"),
        Pending::Known(state) => {
            say("update", &pending::describe_phase(&state));
            if let Some(outcome) = &state.last_outcome {
                say("last", &pending::describe_outcome(outcome));
            }
        }
        Pending::Unreadable { phase, reason } => say(
            "update",
            &format!(
                "journal unreadable ({reason}); phase {}",
                phase.as_deref().unwrap_or("unknown")
            ),
        ),
    }
    match reset::unfinished(&cfg.data_root) {
        Ok(Some(_)) => say(
            "reset",
            "unfinished factory reset: run fleet factory-reset to finish it",
        ),
        Ok(None) => {}
        Err(e) => say("reset", &format!("{e}")),
    }
    match system::disk_usage(&cfg.data_root) {
        Ok(u) => {
            let percent = u.used.saturating_mul(100).checked_div(u.total).unwrap_or(0);
            say(
                "data",
                &format!(
                    "{} used of {} ({percent}%), {} free",
                    text::bytes(u.used),
                    text::bytes(u.total),
                    text::bytes(u.available)
                ),
            );
        }
        Err(e) => say(
            "data",
            &format!("unable to read {}: {e}", cfg.data_root.display()),
        ),
    }
    match system::daemon_states(&cfg.daemons, &cfg.systemd_dir) {
        DaemonStates::Known(states) => {
            for (unit, state) in states {
                say("daemon", &format!("{unit:<24} {state}"));
            }
        }
        DaemonStates::Unknown(why) => say("daemons", &format!("unknown: {why}")),
    }
    match failed {
        Some(e) => Err(Failure::Failed(e)),
        None => Ok(()),
    }
}

fn rollback(cfg: &Config, yes: bool) -> Outcome {
    let boot = load_boot(cfg)?;
    let s = boot_status(&boot)?;
    let target = s.booted.other();
    let health = s.slot(target).health;
    match health {
        SlotHealth::Bad => {
            return Err(Failure::Refused(format!(
                "slot {target} is marked bad (it failed, was given up, or holds an unfinished \
                 install); it will not boot again until a new install. Slot {} stays.",
                s.booted
            )));
        }
        SlotHealth::Trial => {
            return Err(Failure::Refused(format!(
                "slot {target} is on trial, not known good. To cancel the pending trial run \
                 `fleet mark-bad {target}`."
            )));
        }
        SlotHealth::Good => {}
    }
    if s.primary == target {
        println!("slot {target} already boots next. Reboot to start it: reboot");
        return Ok(());
    }
    let rt = runtime()?;
    let rauc = rauc_status(&rt, cfg);
    let version = match &rauc {
        Ok(r) => {
            if let Ok(rec) = r.slots.get(target)
                && system::slot_content(Path::new(&rec.device)).ok() == Some(SlotContent::Empty)
            {
                return Err(Failure::Refused(format!(
                    "slot {target} is empty: {} holds no file system.",
                    rec.device
                )));
            }
            slot_version(cfg, Some(r), target, s.booted)
        }
        Err(e) => {
            say(
                "warning",
                &format!("rauc unreachable, slot contents unchecked: {e}"),
            );
            "unknown".to_owned()
        }
    };
    let running = slot_version(cfg, rauc.as_ref().ok(), s.booted, s.booted);
    say("now", &format!("slot {} runs {running}", s.booted));
    say("rollback", &format!("slot {target} ({version}) boots next"));
    if !yes
        && !confirmed(&format!(
            "Make slot {target} primary? Type yes to continue."
        ))
    {
        return Err(Failure::Refused("not confirmed".into()));
    }
    boot.set_primary(target)
        .with_context(|| format!("unable to make slot {target} primary"))?;
    let after = boot_status(&boot)?;
    if after.primary != target {
        return Err(Failure::Failed(anyhow!(
            "unable to make slot {target} primary: the boot flow still names {}",
            after.primary
        )));
    }
    println!("slot {target} is primary. Reboot to start it: reboot");
    Ok(())
}

/// Marks through RAUC, so RAUC and the boot flow agree; straight through the boot flow when
/// RAUC is not running (the recovery case where RAUC itself is broken).
fn mark(cfg: &Config, boot: &fleet_bootctl::Config, state: MarkState, slot: Slot) -> Outcome {
    let rt = runtime()?;
    let through_rauc = rt.block_on(async {
        let client = rauc_client(cfg).await?;
        client.mark(state, slot).await
    });
    match through_rauc {
        Ok(marked) => say("rauc", &marked.message),
        Err(
            e @ (RaucError::Connect { .. }
            | RaucError::NotRunning { .. }
            | RaucError::CallTimedOut { .. }),
        ) => {
            say("rauc", &format!("unreachable ({e}); using the boot flow"));
            let done = match state {
                MarkState::Good => boot.mark_good(slot),
                MarkState::Bad => boot.mark_bad(slot),
                MarkState::Active => boot.set_primary(slot),
            };
            done.with_context(|| format!("unable to mark slot {slot} {}", state.as_str()))?;
        }
        Err(e) => {
            return Err(Failure::Failed(
                anyhow::Error::from(e).context(format!("unable to mark slot {slot}")),
            ));
        }
    }
    Ok(())
}

fn mark_good(cfg: &Config, slot: Option<Slot>) -> Outcome {
    let boot = load_boot(cfg)?;
    let s = boot_status(&boot)?;
    let slot = slot.unwrap_or(s.booted);
    if slot != s.booted {
        return Err(Failure::Refused(format!(
            "only the running slot ({}) can be marked good: slot {slot} has not proven itself \
             by running. Boot it first, then mark it good.",
            s.booted
        )));
    }
    mark(cfg, &boot, MarkState::Good, slot)?;
    let after = boot_status(&boot)?;
    if after.slot(slot).health != SlotHealth::Good {
        return Err(Failure::Failed(anyhow!(
            "unable to mark slot {slot} good: the boot flow still says {}",
            health_word(after.slot(slot).health)
        )));
    }
    println!("slot {slot} is good and boots next.");
    Ok(())
}

fn mark_bad(cfg: &Config, slot: Slot, yes: bool) -> Outcome {
    let boot = load_boot(cfg)?;
    let s = boot_status(&boot)?;
    if s.slot(slot).health == SlotHealth::Bad {
        println!("slot {slot} is already bad.");
        return Ok(());
    }
    if slot == s.booted && s.slot(slot.other()).health != SlotHealth::Good {
        return Err(Failure::Refused(format!(
            "slot {slot} runs and slot {} is {}: marking {slot} bad would leave no good slot \
             to boot.",
            slot.other(),
            health_word(s.slot(slot.other()).health)
        )));
    }
    let question = if slot == s.booted {
        format!(
            "Mark the running slot {slot} bad? The next boot starts slot {}. Type yes to \
             continue.",
            slot.other()
        )
    } else {
        format!("Mark slot {slot} bad? It will not boot until a new install. Type yes to continue.")
    };
    if !yes && !confirmed(&question) {
        return Err(Failure::Refused("not confirmed".into()));
    }
    mark(cfg, &boot, MarkState::Bad, slot)?;
    let after = boot_status(&boot)?;
    if after.slot(slot).health != SlotHealth::Bad {
        return Err(Failure::Failed(anyhow!(
            "unable to mark slot {slot} bad: the boot flow still says {}",
            health_word(after.slot(slot).health)
        )));
    }
    println!("slot {slot} is bad; slot {} boots next.", after.primary);
    Ok(())
}

fn install(cfg: &Config, path: &Path) -> Outcome {
    let path = std::fs::canonicalize(path)
        .with_context(|| format!("unable to find bundle {}", path.display()))?;
    let size = match bundle::checked_size(&path, cfg.max_bundle_bytes) {
        Ok(size) => size,
        Err(e @ (BundleError::TooLarge { .. } | BundleError::NotAFile { .. })) => {
            return Err(Failure::Refused(e.to_string()));
        }
        Err(e) => return Err(Failure::Failed(e.into())),
    };
    let format = bundle::format_of(&path);
    match (cfg.profile, &format) {
        (Profile::Production, Ok(BundleFormat::Plain)) => {
            return Err(Failure::Refused(format!(
                "{} is a plain bundle: this station accepts only verity bundles, whose every \
                 block RAUC checks as it reads (plain bundles are checked once up front).",
                path.display()
            )));
        }
        (Profile::Production, Err(e)) => {
            return Err(Failure::Refused(format!("{e}: not installed")));
        }
        _ => {}
    }
    let boot = load_boot(cfg)?;
    let s = boot_status(&boot)?;
    let target = s.booted.other();
    if s.slot(s.booted).health == SlotHealth::Trial {
        return Err(Failure::Refused(format!(
            "the running slot {} is on trial: installing would overwrite slot {target}, the \
             only known-good slot. If this slot works, run `fleet mark-good` first.",
            s.booted
        )));
    }
    say("bundle", &path.display().to_string());
    say(
        "format",
        &format!(
            "{}, {}",
            format.as_ref().map_or("unknown", |f| f.as_str()),
            text::bytes(size)
        ),
    );
    say("target", &format!("slot {target} (running {})", s.booted));
    say("verify", "by RAUC: signature, compatible, version floor");
    flush();
    let rt = runtime()?;
    let last: Mutex<Option<(u8, String)>> = Mutex::new(None);
    let on_progress = |p: InstallProgress| {
        let Ok(mut last) = last.lock() else { return };
        let key = (p.percent, p.message.clone());
        if last.as_ref() == Some(&key) {
            return;
        }
        *last = Some(key);
        println!(
            "{}",
            text::row_in(4, &format!("{:>3}%", p.percent), &p.message)
        );
        flush();
    };
    let transaction = format!("fleet-cli-{}", std::process::id());
    let result = rt.block_on(async {
        let options = RaucOptions {
            manifest_hash: ManifestHashCheck::WhereSupported,
            ..rauc_options(cfg)
        };
        let client = rauc_client_with(cfg, options).await?;
        let request = InstallRequest {
            bundle: &path,
            slot: target,
            transaction: &transaction,
            manifest_hash: None,
        };
        client.install_bundle(request, &on_progress).await
    });
    match result {
        Ok(installed) => {
            let after = boot_status(&boot)?;
            if after.primary != installed.slot {
                return Err(Failure::Failed(anyhow!(
                    "unable to confirm the install: slot {} was written but {} boots next",
                    installed.slot,
                    after.primary
                )));
            }
            say(
                "installed",
                &format!("{} in slot {}", installed.version, installed.slot),
            );
            let next = match boot {
                fleet_bootctl::Config::Tryboot(_) => "fleet-bootctl reboot-trial",
                fleet_bootctl::Config::Uboot(_) => "reboot",
            };
            say(
                "next",
                &format!(
                    "slot {} boots on trial at the next boot: {next}. If it does not come \
                     up the station returns to slot {} by itself. If it does, check it and \
                     commit it: fleet mark-good. Nothing else commits a console install; \
                     uncommitted, it is given up after its attempts.",
                    installed.slot, s.booted
                ),
            );
            Ok(())
        }
        Err(RaucError::Refused { reason, .. }) => {
            say("refused", &format!("by RAUC: {reason}"));
            say(
                "result",
                &format!("nothing installed; slot {} still boots next", s.booted),
            );
            Err(Failure::Failed(anyhow!("install refused by RAUC")))
        }
        Err(e @ RaucError::Busy { .. }) => Err(Failure::Failed(
            anyhow::Error::from(e)
                .context("RAUC is busy (the updater may be installing): try later"),
        )),
        Err(e) => Err(Failure::Failed(
            anyhow::Error::from(e).context("unable to install the bundle"),
        )),
    }
}

fn logs(cfg: &Config, lines: Option<u32>) -> Outcome {
    let n = lines.unwrap_or(cfg.log_lines);
    if !(1..=MAX_LOG_LINES).contains(&n) {
        return Err(Failure::Usage(anyhow!(
            "-n {n} is outside 1..={MAX_LOG_LINES}"
        )));
    }
    if !cfg.journald_dir.exists() {
        return Err(Failure::Failed(anyhow!(
            "the journal is unavailable: journald is not running ({} is missing). \
             Try `dmesg | tail` for kernel messages.",
            cfg.journald_dir.display()
        )));
    }
    let out = Command::new("journalctl")
        .args(["-u", &cfg.journal_units, "-n", &n.to_string(), "--no-pager"])
        .output()
        .map_err(|e| {
            Failure::Failed(anyhow!(
                "the journal is unavailable: unable to run journalctl: {e}"
            ))
        })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(Failure::Failed(anyhow!(
            "the journal is unavailable: journalctl {}: {}",
            out.status,
            why.trim()
        )));
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = text::wrap(line, text::WIDTH).into_iter();
        if let Some(first) = parts.next() {
            println!("{first}");
        }
        // Continuations are indented and re-wrapped to stay within 80 columns.
        let rest: Vec<String> = parts.collect();
        for cont in text::wrap(&rest.join(" "), text::WIDTH - 4) {
            println!("    {cont}");
        }
    }
    Ok(())
}

fn factory_reset(cfg: &Config, all: bool, confirm: Option<String>) -> Outcome {
    let data = &cfg.data_root;
    let mut step = |name: &str| {
        println!("{}", row("erased", name));
        flush();
    };
    if let Some(plan) = reset::unfinished(data).map_err(anyhow::Error::from)? {
        say(
            "reset",
            "finishing a factory reset that was interrupted (already confirmed)",
        );
        reset::apply(&plan, &mut step).map_err(anyhow::Error::from)?;
        println!("factory reset finished. Reboot now: reboot");
        return Ok(());
    }
    let plan = reset::plan(data, all).map_err(anyhow::Error::from)?;
    if plan.erase.is_empty() {
        println!(
            "nothing to erase under {}: the station data is already empty.",
            plan.dir.display()
        );
        return Ok(());
    }
    let id = system::station_id(&cfg.identity_file);
    say(
        "station",
        id.as_deref().unwrap_or("unknown (not provisioned)"),
    );
    say("erase", &plan.erase.join(", "));
    say(
        "keep",
        &if plan.keep.is_empty() {
            "nothing".to_owned()
        } else {
            plan.keep.join(", ")
        },
    );
    let expected = id.unwrap_or_else(|| "erase".to_owned());
    let typed = match confirm {
        Some(t) => t,
        None => ask(&format!(
            "This erases the data above for good. Type the station id ({expected}) to \
             continue, anything else to cancel."
        )),
    };
    if typed != expected {
        return Err(Failure::Refused(format!(
            "the typed text does not match {expected:?}: nothing was erased"
        )));
    }
    if cfg.systemd_dir.is_dir() {
        let out = Command::new("systemctl")
            .arg("stop")
            .arg("--")
            .args(&cfg.daemons)
            .output()
            .context("unable to run systemctl stop")?;
        if !out.status.success() {
            return Err(Failure::Failed(anyhow!(
                "unable to stop the fleet daemons, nothing was erased: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        say("stopped", &cfg.daemons.join(", "));
    }
    reset::apply(&plan, &mut step).map_err(anyhow::Error::from)?;
    println!("factory reset done. Reboot now: reboot");
    Ok(())
}

/// Reads every NVMe controller's SMART log, prints one line each and, with `write`, leaves the
/// reporter's files. Fails when any controller could not be read (the others are still written).
fn nvme_smart(write: Option<&Path>, sys_class: &Path, dev: &Path) -> Outcome {
    let controllers = fleet_facts::nvme::controllers(sys_class);
    if let Some(dir) = write {
        // systemd makes it (RuntimeDirectory=); a person at the console may name a new one.
        std::fs::create_dir_all(dir)
            .with_context(|| format!("unable to create {}", dir.display()))?;
        for gone in fleet_facts::nvme::remove_stale(dir, &controllers) {
            say("removed", &gone.display().to_string());
        }
    }
    if controllers.is_empty() {
        say(
            "nvme",
            &format!("no NVMe controller in {}", sys_class.display()),
        );
        return Ok(());
    }
    let mut failed = Vec::new();
    for name in &controllers {
        let page = match nvme_ioctl::smart_log(&dev.join(name)) {
            Ok(p) => p,
            Err(e) => {
                say(name, &format!("unreadable: {:#}", anyhow::Error::from(e)));
                failed.push(name.clone());
                continue;
            }
        };
        let log = match fleet_facts::nvme::parse(&page) {
            Ok(l) => l,
            Err(e) => {
                say(name, &format!("unreadable: {e}"));
                failed.push(name.clone());
                continue;
            }
        };
        say(name, &log.describe());
        if let Some(dir) = write
            && let Err(e) = fleet_facts::nvme::write(dir, name, &log)
        {
            say(name, &format!("not written: {:#}", anyhow::Error::from(e)));
            failed.push(name.clone());
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(anyhow!(
            "the SMART log of {} could not be read or written",
            failed.join(", ")
        )))
    }
}

fn run(cfg: &Config, command: Cmd) -> Outcome {
    match command {
        Cmd::Status => status(cfg),
        Cmd::Rollback { yes } => rollback(cfg, yes),
        Cmd::Install { bundle } => install(cfg, &bundle),
        Cmd::MarkGood { slot } => mark_good(cfg, slot),
        Cmd::MarkBad { slot, yes } => mark_bad(cfg, slot, yes),
        Cmd::Logs { lines } => logs(cfg, lines),
        Cmd::FactoryReset { all, confirm } => factory_reset(cfg, all, confirm),
        Cmd::NvmeSmart {
            write,
            sys_class,
            dev,
        } => nvme_smart(write.as_deref(), &sys_class, &dev),
    }
}

fn print_error(prefix: &str, message: &str) {
    let _ = std::io::stdout().flush();
    for line in text::wrap(&format!("{prefix}: {message}"), text::WIDTH) {
        eprintln!("{line}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Needs no configuration: fleet-nvme-smart.service runs it before anything is provisioned.
    if let Some(Cmd::NvmeSmart {
        write,
        sys_class,
        dev,
    }) = &cli.command
    {
        return exit_code(nvme_smart(write.as_deref(), sys_class, dev));
    }
    let overrides = Overrides {
        data_root: cli.data_root.clone(),
        bootctl_config: cli.bootctl_config.clone(),
        dbus_address: cli.dbus_address.clone(),
    };
    let explicit = cli.config.is_some();
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let cfg = match Config::load(&path, explicit, &overrides) {
        Ok(c) => c,
        Err(e) => {
            print_error("fleet", &e.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if cli.check_config {
        if let Err(e) = fleet_bootctl::Config::load(&cfg.bootctl_config) {
            print_error("fleet", &format!("{:#}", anyhow::Error::from(e)));
            return ExitCode::from(EXIT_USAGE);
        }
        println!("{}: valid", path.display());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        print_error("fleet", "no command given (see fleet --help)");
        return ExitCode::from(EXIT_USAGE);
    };
    exit_code(run(&cfg, command))
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(e)) => {
            print_error("fleet", &format!("{e:#}"));
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Usage(e)) => {
            print_error("fleet", &format!("{e:#}"));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Refused(why)) => {
            print_error("refused", &why);
            eprintln!("nothing was changed.");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}
