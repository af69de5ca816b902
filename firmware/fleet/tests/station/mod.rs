//! A station on the bench for the `fleet` binary, copied in its minimal form from
//! `firmware/fleet-rauc/tests/station/mod.rs` (to move into `fleet-testkit`): keys and bundles
//! built once per test process, then per test a private `dbus-daemon`, the real `rauc service`
//! on it with two file-backed ext4 slots and `bootloader=custom` with the real `fleet-bootctl`
//! (U-Boot flow, env file in the station's directory), a data root, and a `fleet.toml` pointing
//! the CLI at all of it. Everything it started is killed and unmounted on drop.
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fleet_core::slot::Slot;
use sha2::{Digest, Sha256};

pub const COMPATIBLE: &str = "fleet-test-host";
pub const STATION_ID: &str = "stn-bench-7";

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

/// Keys, bundles and the backend binary, built once per test process.
pub struct Fixtures {
    pub bundles: PathBuf,
    pub keys: PathBuf,
    pub bootctl: PathBuf,
}

/// Newest modification time of the files under `dir`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
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

/// `fleet-bootctl` from this target directory when newer than its sources, else built into a
/// target directory of its own. `FLEET_BOOTCTL_BIN` overrides both.
fn locate_bootctl() -> Result<PathBuf, String> {
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
    let fleet = PathBuf::from(env!("CARGO_BIN_EXE_fleet"));
    if let Some(profile_dir) = fleet.parent() {
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
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-bootctl-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(cargo)
        .args(["build", "--quiet", "-p", "fleet-bootctl", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target))?;
    Ok(target.join("debug/fleet-bootctl"))
}

fn prerequisites() -> Result<(), String> {
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
            let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-cli-fixtures");
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
            Ok(Fixtures {
                bundles,
                keys,
                bootctl: locate_bootctl()?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Prints SKIP and returns from the test when this machine cannot run RAUC.
macro_rules! fixtures_or_skip {
    () => {
        match $crate::station::fixtures() {
            Ok(f) => f,
            Err(why) => {
                eprintln!("SKIP {}: {why}", module_path!());
                println!("SKIP: {why}");
                return;
            }
        }
    };
}

/// Logs every backend call; while `boot/hold` exists, blocks `set-state`.
const BACKEND_PREAMBLE: &str = r#"#!/bin/sh
d="$(dirname "$0")/boot"
echo "$*" >> "$d/calls.log"
if [ "$1" = set-state ] && [ -e "$d/hold" ]; then
  : > "$d/held"
  while [ -e "$d/hold" ]; do sleep 0.05; done
fi
export FLEET_BOOTCTL_CONFIG="$d/bootctl.toml"
"#;

/// What a `fleet` run printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Everything printed, for assertions on wording.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A station on the bench. Kills what it started on drop.
pub struct Station {
    dir: tempfile::TempDir,
    pub address: String,
    pub dbus: Child,
    pub rauc: Option<Child>,
    booted: Slot,
}

/// How slot B starts out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotB {
    /// An ext4 file system holding version 1.0.0, like slot A.
    Flashed,
    /// Zeros: never written.
    Empty,
}

impl Station {
    pub fn start(slot_b: SlotB) -> Result<Station, String> {
        let fixtures = fixtures()?;
        let dir = tempfile::Builder::new()
            .prefix("fleet-cli-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let io = |e: std::io::Error| e.to_string();
        for sub in [
            "mnt",
            "rauc-data",
            "boot",
            "img/etc",
            "data/fleet/identity",
            "data/fleet/boot",
            "data/fleet/update",
            "data/fleet/updated",
            "data/fleet/downloads",
            "data/fleet/recordings/data",
            "data/fleet/retention",
            "data/rauc",
        ] {
            std::fs::create_dir_all(d.join(sub)).map_err(io)?;
        }
        std::fs::write(d.join("img/etc/fleet-version"), "1.0.0\n").map_err(io)?;
        for slot in ["slot-a.img", "slot-b.img"] {
            if slot == "slot-b.img" && slot_b == SlotB::Empty {
                std::fs::write(d.join(slot), vec![0u8; 8 << 20]).map_err(io)?;
                continue;
            }
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(d.join("img"))
                .arg(d.join(slot))
                .arg("8M"))?;
        }
        // The station's data: identity, a version floor, recordings, retention index.
        std::fs::write(
            d.join("data/fleet/identity/updated.toml"),
            format!("device-id = \"{STATION_ID}\"\ncompatible = \"{COMPATIBLE}\"\n"),
        )
        .map_err(io)?;
        std::fs::write(d.join("data/fleet/update/version-floor"), "1.0.0\n").map_err(io)?;
        std::fs::write(d.join("data/fleet/recordings/data/0001.flac"), b"fLaC").map_err(io)?;
        std::fs::write(d.join("data/fleet/retention/index.sqlite"), b"SQLite").map_err(io)?;
        std::fs::write(d.join("os-release"), "NAME=fleet\nVERSION_ID=1.0.0\n").map_err(io)?;

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
        let backend = d.join("bootctl.sh");
        std::fs::write(
            &backend,
            format!(
                "{BACKEND_PREAMBLE}exec '{}' \"$@\"\n",
                fixtures.bootctl.display()
            ),
        )
        .map_err(io)?;
        run(Command::new("chmod").arg("+x").arg(&backend))?;

        let conf = format!(
            "# bundle-formats=plain: this host's kernel has no device-mapper (stations: -plain).\n\
             [system]\ncompatible={COMPATIBLE}\nbootloader=custom\nmountprefix={mnt}\n\
             data-directory={data}\nbundle-formats=plain\n\n\
             [keyring]\npath={keyring}\ncheck-purpose=codesign\n\n\
             [handlers]\nbootloader-custom-backend={backend}\n\n\
             [slot.rootfs.0]\ndevice={a}\ntype=ext4\nbootname=A\n\n\
             [slot.rootfs.1]\ndevice={b}\ntype=ext4\nbootname=B\n",
            mnt = d.join("mnt").display(),
            data = d.join("rauc-data").display(),
            keyring = fixtures.keys.join("ca.cert.pem").display(),
            backend = backend.display(),
            a = d.join("slot-a.img").display(),
            b = d.join("slot-b.img").display(),
        );
        std::fs::write(d.join("system.conf"), conf).map_err(io)?;
        let bus_conf = format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><type>session</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>\
             <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
             <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n",
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
        let fleet_toml = format!(
            "data-root = \"{data}\"\nbootctl-config = \"{bootctl}\"\ndbus-address = \"{address}\"\n\
             profile = \"development\"\nos-release = \"{os}\"\n\
             systemd-dir = \"{d}/no-systemd\"\njournald-dir = \"{d}/no-journald\"\n",
            data = d.join("data").display(),
            bootctl = boot.join("bootctl.toml").display(),
            os = d.join("os-release").display(),
            d = d.display(),
        );
        std::fs::write(d.join("fleet.toml"), fleet_toml).map_err(io)?;
        let mut station = Station {
            dir,
            address,
            dbus,
            rauc: None,
            booted: Slot::A,
        };
        if station.address.is_empty() {
            return Err("dbus-daemon printed no address".into());
        }
        station.start_rauc()?;
        station.wait_for_rauc()?;
        Ok(station)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn start_rauc(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("rauc.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("rauc")
            .arg(format!("--conf={}", self.path("system.conf").display()))
            .args(["service", &format!("--override-boot-slot={}", self.booted)])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env(
                "FLEET_VERSION_FLOOR_FILE",
                self.path("data/fleet/update/version-floor"),
            )
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("unable to start rauc service: {e}"))?;
        self.rauc = Some(child);
        Ok(())
    }

    /// RAUC answers once it has claimed its name; `busctl`-free: ask through `fleet status`.
    fn wait_for_rauc(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.fleet(&["status"], "").stdout.contains("compatible") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "rauc did not appear on the bus; log:\n{}",
            self.log()
        ))
    }

    pub fn kill_rauc(&mut self) {
        if let Some(mut child) = self.rauc.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What a reboot into `slot` looks like to userspace: the kernel command line names it and
    /// RAUC starts again, seeing it as booted.
    pub fn boot_into(&mut self, slot: Slot) {
        self.kill_rauc();
        std::fs::write(
            self.path("boot/cmdline"),
            format!("console=ttyS0 rauc.slot={slot}\n"),
        )
        .expect("write cmdline");
        self.booted = slot;
        self.start_rauc().expect("start rauc");
        self.wait_for_rauc().expect("rauc back");
    }

    /// Runs the `fleet` binary against this station with `input` on stdin.
    pub fn fleet(&self, args: &[&str], input: &str) -> Ran {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet"))
            .args(args)
            .env("FLEET_CONFIG", self.path("fleet.toml"))
            .env_remove("FLEET_DATA_ROOT")
            .env_remove("FLEET_BOOTCTL_CONFIG")
            .env_remove("FLEET_DBUS_ADDRESS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fleet");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("fleet finishes");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("rauc.log")).unwrap_or_default()
    }

    pub fn slot_hash(&self, slot: Slot) -> String {
        let bytes = std::fs::read(self.slot_image(slot)).expect("read slot image");
        hex::encode(Sha256::digest(bytes))
    }

    pub fn slot_image(&self, slot: Slot) -> PathBuf {
        self.path(match slot {
            Slot::A => "slot-a.img",
            Slot::B => "slot-b.img",
        })
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
        let _ = std::fs::remove_file(self.path("boot/hold"));
        self.kill_rauc();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
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
