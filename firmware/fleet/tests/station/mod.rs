//! A station on the bench for the `fleet` binary: `fleet_testkit::rauc::Station` (the real
//! `rauc service` on a private `dbus-daemon`, two file-backed ext4 slots, the real
//! `fleet-bootctl` as RAUC's custom backend on the U-Boot flow) with RAUC's data directory and
//! the version floor moved out of the way of a station data root (`data/`: identity, version
//! floor, recordings, retention index) and a `fleet.toml` pointing the CLI at all of it.
//! Everything the station started is killed and unmounted on drop.
use std::io::Write as _;
use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_core::slot::Slot;
use fleet_testkit::rauc::{self, Setup};

pub use fleet_testkit::rauc::{COMPATIBLE, SlotB, bundle};

pub const STATION_ID: &str = "stn-bench-7";

/// Prints SKIP and returns from the test when this machine cannot run RAUC or the real
/// `fleet-bootctl` is unavailable (the CLI reads its U-Boot env).
macro_rules! fixtures_or_skip {
    () => {{
        let f = fleet_testkit::rauc_fixtures_or_skip!();
        if f.bootctl.is_none() {
            eprintln!("SKIP {}: fleet-bootctl is unavailable", module_path!());
            println!("SKIP: fleet-bootctl is unavailable");
            return;
        }
        f
    }};
}

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

/// The bench station with the `fleet` CLI's data root and configuration.
pub struct Station {
    rauc: rauc::Station,
}

impl Deref for Station {
    type Target = rauc::Station;
    fn deref(&self) -> &rauc::Station {
        &self.rauc
    }
}

impl DerefMut for Station {
    fn deref_mut(&mut self) -> &mut rauc::Station {
        &mut self.rauc
    }
}

impl Station {
    pub fn start(slot_b: SlotB) -> Result<Station, String> {
        if rauc::fixtures()?.bootctl.is_none() {
            return Err("the fleet CLI's tests need the real fleet-bootctl".into());
        }
        let rauc = rauc::Station::start_with(Setup {
            slot_b,
            rauc_data: "rauc-data",
            version_floor: "data/fleet/update/version-floor",
            prefix: "fleet-cli-",
        })?;
        let station = Station { rauc };
        let d = station.path("");
        let io = |e: std::io::Error| e.to_string();
        for sub in [
            "data/fleet/identity",
            "data/fleet/boot",
            "data/fleet/updated",
            "data/fleet/downloads",
            "data/fleet/recordings/data",
            "data/fleet/retention",
            "data/rauc",
        ] {
            std::fs::create_dir_all(d.join(sub)).map_err(io)?;
        }
        // The station's data: identity, recordings, retention index (the floor is the
        // bench's).
        std::fs::write(
            d.join("data/fleet/identity/updated.toml"),
            format!("device-id = \"{STATION_ID}\"\ncompatible = \"{COMPATIBLE}\"\n"),
        )
        .map_err(io)?;
        std::fs::write(d.join("data/fleet/recordings/data/0001.flac"), b"fLaC").map_err(io)?;
        std::fs::write(d.join("data/fleet/retention/index.sqlite"), b"SQLite").map_err(io)?;
        std::fs::write(d.join("os-release"), "NAME=fleet\nVERSION_ID=1.0.0\n").map_err(io)?;
        let fleet_toml = format!(
            "data-root = \"{data}\"\nbootctl-config = \"{bootctl}\"\ndbus-address = \"{address}\"\n\
             profile = \"development\"\nos-release = \"{os}\"\n\
             systemd-dir = \"{d}/no-systemd\"\njournald-dir = \"{d}/no-journald\"\n",
            data = d.join("data").display(),
            bootctl = d.join("boot/bootctl.toml").display(),
            address = station.address,
            os = d.join("os-release").display(),
            d = d.display(),
        );
        std::fs::write(d.join("fleet.toml"), fleet_toml).map_err(io)?;
        station.wait_for_rauc()?;
        Ok(station)
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

    /// A reboot into `slot` as userspace sees it, once RAUC answers again.
    pub fn boot_into(&mut self, slot: Slot) {
        self.rauc.boot_into(slot).expect("start rauc");
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
}
