//! A RAUC station on the bench, the one harness of `fleet-rauc`'s, `fleet`'s and
//! `fleet-updated`'s tests (laid out by [`Setup`]): keys and bundles built
//! once per test process, then per test a private `dbus-daemon`, the real `rauc service` on it
//! with two file-backed ext4 slots and `bootloader=custom` (`fleet-bootctl` on the U-Boot flow,
//! or a shell stand-in), all killed and unmounted on drop.
//!
//! [`Station::boot`] simulates a power-on the way the U-Boot script would decide it
//! (`fleet_core::boot::uboot::decide_boot` on the station's `uboot.env`), then the slot's
//! `rauc.slot=` on the command line, `fleet-bootctl boot-check`, and RAUC restarted with that
//! slot booted.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fleet_core::slot::Slot;
use fleet_rauc::{ManifestHashCheck, RaucClient, RaucOptions};
use sha2::{Digest, Sha256};

pub const COMPATIBLE: &str = "fleet-test-host";

/// A scratch directory next to the test binaries (`target/tmp`): bundles and binaries built
/// once per test process live there, not in `/tmp`.
pub fn target_tmpdir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .map(|t| t.join("tmp"))
        })
        .unwrap_or_else(std::env::temp_dir)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("unable to run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Keys and bundles, built once per test process.
#[derive(Debug)]
pub struct Fixtures {
    pub keys: PathBuf,
    pub bundles: PathBuf,
    pub rauc_version: (u32, u32),
    /// The `fleet-bootctl` binary RAUC uses as its custom backend, or `None` for the shell
    /// stand-in when it could not be built (said loudly).
    pub bootctl: Option<PathBuf>,
}

/// Newest modification time of the files under `dir`.
pub fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// `fleet-bootctl` from this target directory when it is newer than its sources (as after
/// `cargo test --workspace`), else built into a target directory of its own (no wait on the
/// lock `cargo test` holds). `FLEET_BOOTCTL_BIN` overrides both.
pub fn locate_bootctl() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("FLEET_BOOTCTL_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = repo_root();
    let sources = [
        root.join("firmware/fleet-bootctl"),
        root.join("firmware/fleet-core/src"),
    ]
    .iter()
    .filter_map(|d| newest_source(d))
    .max();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
        let built = profile_dir.join("fleet-bootctl");
        let fresh = std::fs::metadata(&built)
            .and_then(|m| m.modified())
            .ok()
            .zip(sources)
            .is_some_and(|(bin, src)| bin >= src);
        if fresh {
            return Ok(built);
        }
    }
    let target = target_tmpdir().join("fleet-bootctl-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo)
        .args(["build", "--quiet", "-p", "fleet-bootctl", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target))?;
    Ok(target.join("debug/fleet-bootctl"))
}

pub fn prerequisites() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Err("not root: rauc mounts plain bundles through loop devices".into());
    }
    for tool in ["rauc", "dbus-daemon", "mkfs.ext4", "debugfs", "openssl"] {
        if run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            return Err(format!(
                "{tool} is not installed (run tests/setup.d/20-rauc.sh)"
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control: loop devices are unavailable".into());
    }
    Ok(())
}

pub fn fixtures() -> Result<&'static Fixtures, String> {
    static FIXTURES: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            prerequisites()?;
            // One directory per test process (another run may share this target directory);
            // directories of processes that are gone are removed.
            let parent = target_tmpdir().join("fleet-rauc-fixtures");
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
            let base = parent.join(std::process::id().to_string());
            let keys = base.join("keys");
            let bundles = base.join("bundles");
            let root = repo_root();
            run(Command::new(root.join("keys/gen-dev-pki.sh")).arg(&keys))?;
            run(Command::new(root.join("bundles/build-test-bundles.sh"))
                .arg(&keys)
                .arg(&bundles)
                .env("BUNDLE_FORMAT", "plain")
                .env("COMPATIBLE", COMPATIBLE))?;
            let version = run(Command::new("rauc").arg("--version"))?;
            let rauc_version = parse_rauc_version(&version)
                .ok_or_else(|| format!("unable to parse rauc version {version:?}"))?;
            let bootctl = match locate_bootctl() {
                Ok(bin) => Some(bin),
                Err(why) => {
                    eprintln!(
                        "NOTE: fleet-bootctl unavailable ({why}); RAUC uses the shell stand-in backend"
                    );
                    None
                }
            };
            Ok(Fixtures {
                keys,
                bundles,
                rauc_version,
                bootctl,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

pub fn parse_rauc_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().nth(1)?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .map(|m| {
            m.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some((major, minor))
}

/// Prints SKIP and returns from the test when this machine cannot run RAUC (not root, a tool
/// missing); fails the test when the machine can but the keys or bundles cannot be built.
#[macro_export]
macro_rules! rauc_fixtures_or_skip {
    () => {{
        if let Err(why) = $crate::rauc::prerequisites() {
            eprintln!("SKIP {}: {why}", module_path!());
            println!("SKIP: {why}");
            return;
        }
        match $crate::rauc::fixtures() {
            Ok(f) => f,
            Err(why) => panic!("unable to prepare keys and bundles: {why}"),
        }
    }};
}

/// A station on the bench: slots, bootloader state, bus and RAUC. Kills what it started on drop.
#[derive(Debug)]
pub struct Station {
    dir: tempfile::TempDir,
    pub address: String,
    pub dbus: Child,
    pub rauc: Option<Child>,
    /// The slot RAUC is told is booted (`--override-boot-slot`).
    pub booted: Slot,
    setup: Setup,
}

/// How slot B starts out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotB {
    /// An ext4 file system holding version 1.0.0, like slot A.
    #[default]
    Flashed,
    /// Zeros: never written.
    Empty,
}

/// How a bench station is laid out (paths relative to its directory). The default suits
/// tests of RAUC and the updater; a test of a tool that owns a data root (the `fleet` CLI)
/// moves RAUC's data directory and the version floor out of its way.
#[derive(Debug, Clone)]
pub struct Setup {
    pub slot_b: SlotB,
    /// RAUC's `data-directory`.
    pub rauc_data: &'static str,
    /// The version floor RAUC's install check reads (`FLEET_VERSION_FLOOR_FILE`), written
    /// as 1.0.0 at the start.
    pub version_floor: &'static str,
    /// Prefix of the station's temporary directory.
    pub prefix: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            slot_b: SlotB::Flashed,
            rauc_data: "data",
            version_floor: "version-floor",
            prefix: "fleet-rauc-",
        }
    }
}

/// Every backend call goes through this: it logs the call and, while `boot/hold` exists, blocks
/// `set-state` (RAUC marks the target slot bad just before writing it) so a test can kill RAUC
/// mid-install.
pub const BACKEND_PREAMBLE: &str = r#"#!/bin/sh
d="$(dirname "$0")/boot"
echo "$*" >> "$d/calls.log"
if [ "$1" = set-state ] && [ -e "$d/hold" ]; then
  : > "$d/held"
  while [ -e "$d/hold" ]; do sleep 0.05; done
fi
"#;

/// RAUC's backend: the real `fleet-bootctl` on the U-Boot flow, its env file in the station dir.
pub const BOOTCTL_BACKEND: &str = r#"export FLEET_BOOTCTL_CONFIG="$d/bootctl.toml"
exec "$FLEET_BOOTCTL_BIN" "$@"
"#;

/// Stand-in when `fleet-bootctl` cannot be built: state in plain files.
pub const SCRIPT_BACKEND: &str = r#"case "$1" in
  get-primary) cat "$d/primary" ;;
  set-primary) echo "$2" > "$d/primary.tmp" && mv "$d/primary.tmp" "$d/primary" ;;
  get-state) cat "$d/state-$2" 2>/dev/null || echo good ;;
  set-state) echo "$3" > "$d/state-$2" ;;
  get-current) cat "$d/current" ;;
  *) echo "unknown command $1" >&2; exit 1 ;;
esac
"#;

impl Station {
    /// A station with the default [`Setup`].
    pub fn start() -> Result<Station, String> {
        Self::start_with(Setup::default())
    }

    /// A station laid out by `setup`; RAUC is started but may not answer yet (see
    /// [`Station::client`]).
    pub fn start_with(setup: Setup) -> Result<Station, String> {
        let dir = tempfile::Builder::new()
            .prefix(setup.prefix)
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let io = |e: std::io::Error| e.to_string();
        for sub in ["mnt", setup.rauc_data, "boot", "img/etc"] {
            std::fs::create_dir_all(d.join(sub)).map_err(io)?;
        }
        std::fs::write(d.join("img/etc/fleet-version"), "1.0.0\n").map_err(io)?;
        for slot in ["slot-a.img", "slot-b.img"] {
            if slot == "slot-b.img" && setup.slot_b == SlotB::Empty {
                std::fs::write(d.join(slot), vec![0u8; 8 << 20]).map_err(io)?;
                continue;
            }
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(d.join("img"))
                .arg(d.join(slot))
                .arg("8M"))?;
        }
        let floor = d.join(setup.version_floor);
        if let Some(parent) = floor.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&floor, "1.0.0\n").map_err(io)?;
        let fixtures = fixtures()?;
        let backend = d.join("bootctl.sh");
        let script = match &fixtures.bootctl {
            Some(bin) => {
                let boot = d.join("boot");
                std::fs::write(boot.join("cmdline"), "console=ttyS0 rauc.slot=A\n").map_err(io)?;
                let toml = format!(
                    "flow = \"uboot\"\nattempts = 3\nlock-file = \"{lock}\"\n\n[uboot]\n\
                     env-file = \"{env}\"\ncmdline = \"{cmdline}\"\n",
                    lock = boot.join("bootctl.lock").display(),
                    env = boot.join("uboot.env").display(),
                    cmdline = boot.join("cmdline").display(),
                );
                std::fs::write(boot.join("bootctl.toml"), toml).map_err(io)?;
                format!(
                    "{BACKEND_PREAMBLE}FLEET_BOOTCTL_BIN='{}'\n{BOOTCTL_BACKEND}",
                    bin.display()
                )
            }
            None => {
                std::fs::write(d.join("boot/primary"), "A\n").map_err(io)?;
                std::fs::write(d.join("boot/current"), "A\n").map_err(io)?;
                format!("{BACKEND_PREAMBLE}{SCRIPT_BACKEND}")
            }
        };
        std::fs::write(&backend, script).map_err(io)?;
        run(Command::new("chmod").arg("+x").arg(&backend))?;

        let keyring = fixtures.keys.join("ca.cert.pem");
        let conf = format!(
            "# Test configuration for the development host.\n\
             # bundle-formats=plain: this host's kernel has no device-mapper, so verity bundles\n\
             # cannot be mounted here. Stations set bundle-formats=-plain and refuse plain bundles.\n\
             [system]\ncompatible={COMPATIBLE}\nbootloader=custom\nmountprefix={mnt}\n\
             data-directory={data}\nbundle-formats=plain\n\n\
             [keyring]\npath={keyring}\ncheck-purpose=codesign\n\n\
             [handlers]\nbootloader-custom-backend={backend}\n\n\
             [slot.rootfs.0]\ndevice={a}\ntype=ext4\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={b}\ntype=ext4\nbootname=B\n",
            mnt = d.join("mnt").display(),
            data = d.join(setup.rauc_data).display(),
            keyring = keyring.display(),
            backend = backend.display(),
            a = d.join("slot-a.img").display(),
            b = d.join("slot-b.img").display(),
        );
        std::fs::write(d.join("system.conf"), conf).map_err(io)?;
        let bus_conf = format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><type>session</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>\
             <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
             <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
            sock = d.join("bus.sock").display()
        );
        std::fs::write(d.join("bus.conf"), bus_conf).map_err(io)?;

        let mut dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", d.join("bus.conf").display()))
            .args(["--nofork", "--nopidfile", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("unable to start dbus-daemon: {e}"))?;
        let mut address = String::new();
        if let Some(out) = dbus.stdout.take() {
            BufReader::new(out)
                .read_line(&mut address)
                .map_err(|e| e.to_string())?;
        }
        let address = address.trim().to_owned();
        let mut station = Station {
            dir,
            address,
            dbus,
            rauc: None,
            booted: Slot::A,
            setup,
        };
        if station.address.is_empty() {
            return Err("dbus-daemon printed no address".into());
        }
        station.start_rauc()?;
        Ok(station)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn start_rauc(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("rauc.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("rauc")
            .arg(format!("--conf={}", self.path("system.conf").display()))
            // The host's kernel command line names no rauc.slot.
            .arg("service")
            .arg(format!("--override-boot-slot={}", self.booted))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env(
                "FLEET_VERSION_FLOOR_FILE",
                self.path(self.setup.version_floor),
            )
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("unable to start rauc service: {e}"))?;
        self.rauc = Some(child);
        Ok(())
    }

    pub fn restart_rauc(&mut self) -> Result<(), String> {
        self.kill_rauc();
        self.start_rauc()
    }

    pub fn kill_rauc(&mut self) {
        if let Some(mut child) = self.rauc.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What a reboot into `slot` looks like to userspace, without the boot script's decision
    /// (see [`Station::boot`] for that): the kernel command line names the slot and RAUC
    /// starts again seeing it booted. RAUC may not answer yet when this returns.
    pub fn boot_into(&mut self, slot: Slot) -> Result<(), String> {
        self.kill_rauc();
        std::fs::write(
            self.path("boot/cmdline"),
            format!("console=ttyS0 rauc.slot={slot}\n"),
        )
        .map_err(|e| e.to_string())?;
        self.booted = slot;
        self.start_rauc()
    }

    /// A client once RAUC answers on the bus (it needs a moment to claim its name). Fails the
    /// test at once if RAUC exits, and after 20 s if it never answers.
    pub async fn client(&mut self, options: RaucOptions) -> RaucClient {
        let client = RaucClient::connect(&self.address, options)
            .await
            .expect("connect to the private bus");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.rauc.as_mut().map(Child::try_wait) {
                panic!("rauc service exited ({status}); log:\n{}", self.log());
            }
            match tokio::time::timeout(Duration::from_secs(2), client.compatible()).await {
                Ok(Ok(_)) => return client,
                Ok(Err(e)) if !e.is_retryable() => panic!("rauc answered with an error: {e}"),
                Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!(
            "rauc did not appear on the bus within 20 s; log:\n{}",
            self.log()
        );
    }

    /// Powers the station on again the way the U-Boot script decides
    /// (`fleet_core::boot::uboot::decide_boot` over `uboot.env`: a damaged env reads as empty,
    /// no slot left resets the counters and resets the board), then boots that slot: its
    /// `rauc.slot=` on the command line, `fleet-bootctl boot-check` as the systemd oneshot
    /// runs it, and RAUC restarted with that slot booted. Needs the real `fleet-bootctl`.
    pub fn boot(&mut self) -> Result<Slot, String> {
        self.boot_with_dead_slot(None).map(|(slot, _)| slot)
    }

    /// As [`Station::boot`], but a `dead` slot's kernel never comes up: every time the script
    /// picks it, the watchdog resets the board and the script decides again (spending that
    /// slot's counter). Returns the slot that came up and how many boots the dead one got.
    pub fn boot_with_dead_slot(&mut self, dead: Option<Slot>) -> Result<(Slot, u32), String> {
        use fleet_core::boot::Attempts;
        use fleet_core::boot::uboot::{BootDecision, decide_boot};
        if fixtures()?.bootctl.is_none() {
            return Err("simulated boots need the real fleet-bootctl".into());
        }
        self.kill_rauc();
        let env_file = self.path("boot/uboot.env");
        let size = fleet_bootctl::uenv::DEFAULT_ENV_SIZE;
        let mut slot = None;
        let mut dead_boots = 0u32;
        // A reset after "no slot left" boots again with fresh counters: two rounds at most,
        // plus the boots a dead slot swallows.
        for _ in 0..2 + 2 * Attempts::default().get() {
            let env = std::fs::read(&env_file)
                .ok()
                .and_then(|b| fleet_bootctl::uenv::decode(&b, size).ok())
                .unwrap_or_default();
            let decision = decide_boot(&env, Attempts::default());
            let bytes = fleet_bootctl::uenv::encode(decision.env(), size)
                .map_err(|e| format!("unable to encode the env: {e}"))?;
            fleet_durable::write_atomic(&env_file, &bytes, fleet_durable::Replace::Rename)
                .map_err(|e| std::io::Error::from(e).to_string())?;
            if let BootDecision::Boot { slot: s, .. } = decision {
                if Some(s) == dead {
                    dead_boots += 1;
                    continue;
                }
                slot = Some(s);
                break;
            }
        }
        let slot = slot.ok_or("no slot booted after a counter reset")?;
        std::fs::write(
            self.path("boot/cmdline"),
            format!("console=ttyS0 rauc.slot={slot}\n"),
        )
        .map_err(|e| e.to_string())?;
        self.backend("boot-check");
        self.booted = slot;
        self.start_rauc()?;
        Ok((slot, dead_boots))
    }

    /// The U-Boot env as the boot script would import it.
    pub fn uboot_env(&self) -> fleet_core::boot::uboot::Env {
        std::fs::read(self.path("boot/uboot.env"))
            .ok()
            .and_then(|b| {
                fleet_bootctl::uenv::decode(&b, fleet_bootctl::uenv::DEFAULT_ENV_SIZE).ok()
            })
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("rauc.log")).unwrap_or_default()
    }

    /// The file that backs `slot`.
    pub fn slot_image(&self, slot: Slot) -> PathBuf {
        self.path(match slot {
            Slot::A => "slot-a.img",
            Slot::B => "slot-b.img",
        })
    }

    pub fn slot_hash(&self, slot: Slot) -> String {
        let bytes = std::fs::read(self.slot_image(slot)).expect("read slot image");
        hex::encode(Sha256::digest(bytes))
    }

    pub fn slot_version(&self, slot: Slot) -> String {
        run(Command::new("debugfs")
            .args(["-R", "cat /etc/fleet-version"])
            .arg(self.slot_image(slot))
            .stderr(Stdio::null()))
        .expect("read /etc/fleet-version from the slot image")
        .trim()
        .to_owned()
    }

    /// Asks the bootloader backend directly, as RAUC does (`get-primary`, `get-state B`).
    pub fn backend(&self, args: &str) -> String {
        run(Command::new(self.path("bootctl.sh")).args(args.split_whitespace()))
            .unwrap_or_else(|e| panic!("backend {args}: {e}"))
            .trim()
            .to_owned()
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        // Release a backend held by a test, then stop RAUC and the bus.
        let _ = std::fs::remove_file(self.path("boot/hold"));
        self.kill_rauc();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
        // A RAUC killed mid-install leaves its bundle mounted (through an auto-clearing loop
        // device): unmount everything under this station so the directory can go.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").arg("-l").arg(point).status();
        }
    }
}

pub fn bundle(f: &Fixtures, name: &str) -> PathBuf {
    f.bundles.join(format!("{name}.raucb"))
}

pub fn lenient() -> RaucOptions {
    RaucOptions {
        manifest_hash: ManifestHashCheck::WhereSupported,
        ..RaucOptions::default()
    }
}
