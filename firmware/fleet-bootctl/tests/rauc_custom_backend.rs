//! The real `rauc service` (on a private D-Bus) driving `fleet-bootctl` as its
//! `bootloader=custom` backend on the tryboot flow: RAUC's calling convention and output
//! format, end to end. (fleet-rauc's tests cover the U-Boot flow and installs.)
//!
//! Needs rauc, dbus-daemon and openssl (tests/setup.d/00-apt.sh).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_core::boot::autoboot::{Autoboot, BootPartitions};
use fleet_core::slot::Slot;

/// Kills and reaps a child on drop, also when the test fails.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bench {
    dir: tempfile::TempDir,
    bus: String,
    _dbus: Guard,
    rauc: Option<Guard>,
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("unable to write {}: {e}", path.display()));
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["config", "data", "dt", "mnt"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        write(
            &d.join("config/autoboot.txt"),
            Autoboot { committed: Slot::A }.render(&BootPartitions::default()),
        );
        write(
            &d.join("bootctl.toml"),
            format!(
                "flow = \"tryboot\"\nlock-file = \"{d}/lock\"\n[tryboot]\nconfig-root = \"{d}/config\"\n\
                 data-root = \"{d}/data\"\nbootloader-dir = \"{d}/dt\"\nreboot-command = [\"touch\", \"{d}/flag\"]\n",
                d = d.display()
            ),
        );
        // RAUC runs the backend with no arguments of ours: a wrapper names the config.
        write(
            &d.join("backend.sh"),
            format!(
                "#!/bin/sh\necho \"$@\" >> {d}/calls.log\nFLEET_BOOTCTL_CONFIG={d}/bootctl.toml exec {bin} \"$@\"\n",
                d = d.display(),
                bin = env!("CARGO_BIN_EXE_fleet-bootctl")
            ),
        );
        let chmod = Command::new("chmod")
            .arg("+x")
            .arg(d.join("backend.sh"))
            .status()
            .expect("chmod");
        assert!(chmod.success());
        for img in ["a.img", "b.img"] {
            write(&d.join(img), vec![0u8; 4096]);
        }
        let openssl = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=fleet-bootctl-test",
                "-days",
                "1",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("ca.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (tests/setup.d/00-apt.sh)");
        assert!(openssl.success());
        write(
            &d.join("system.conf"),
            format!(
                "[system]\ncompatible=fleet-bootctl-test\nbootloader=custom\nmountprefix={d}/mnt\n\
                 data-directory={d}/data/rauc\n\n[handlers]\nbootloader-custom-backend={d}/backend.sh\n\n\
                 [keyring]\npath={d}/ca.pem\n\n[slot.rootfs.0]\ndevice={d}/a.img\ntype=raw\nbootname=A\n\n\
                 [slot.rootfs.1]\ndevice={d}/b.img\ntype=raw\nbootname=B\n",
                d = d.display()
            ),
        );
        let socket = d.join("bus");
        write(
            &d.join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>session</type>\
                 <listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\"><allow user=\"*\"/>\
                 <allow own=\"*\"/><allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        );
        let dbus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", d.join("bus.conf").display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs (tests/setup.d/00-apt.sh)");
        let bus = format!("unix:path={}", socket.display());
        Bench {
            dir,
            bus,
            _dbus: Guard(dbus),
            rauc: None,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// (Re)starts `rauc service` as booted from `slot`, the way the firmware left it.
    fn boot(&mut self, slot: Slot, via_tryboot: bool) {
        self.rauc = None;
        let partition = u32::from(BootPartitions::default().of(slot));
        write(&self.path("dt/partition"), partition.to_be_bytes());
        write(
            &self.path("dt/tryboot"),
            u32::from(via_tryboot).to_be_bytes(),
        );
        let log = std::fs::File::create(self.path("rauc.log")).expect("log");
        let child = Command::new("rauc")
            .arg(format!("--conf={}", self.path("system.conf").display()))
            .arg(format!("--override-boot-slot={slot}"))
            .arg("service")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("rauc runs (tests/setup.d/00-apt.sh)");
        self.rauc = Some(Guard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.rauc(&["status"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "rauc service did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("rauc.log")).unwrap_or_default()
    }

    fn rauc(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("rauc")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .output()
            .expect("rauc");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// (boot_primary, boot_status of rootfs.0, of rootfs.1) from `rauc status`.
    fn status(&self) -> (String, String, String) {
        let text = self
            .rauc(&["status", "--output-format=json"])
            .expect("rauc status");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        let boot_status = |name: &str| {
            json["slots"]
                .as_array()
                .expect("slots")
                .iter()
                .find_map(|s| s.get(name))
                .and_then(|s| s["boot_status"].as_str())
                .unwrap_or("?")
                .to_owned()
        };
        (
            json["boot_primary"].as_str().unwrap_or("?").to_owned(),
            boot_status("rootfs.0"),
            boot_status("rootfs.1"),
        )
    }

    fn committed(&self) -> Slot {
        let text = std::fs::read_to_string(self.path("config/autoboot.txt")).expect("autoboot.txt");
        Autoboot::parse(&text, &BootPartitions::default())
            .expect("valid")
            .committed
    }
}

#[test]
fn rauc_drives_the_tryboot_flow_through_the_custom_backend() {
    let mut bench = Bench::new();
    bench.boot(Slot::A, false);
    // Fresh station: A committed, B unknown (bad), A primary.
    assert_eq!(
        bench.status(),
        ("rootfs.0".into(), "good".into(), "bad".into())
    );
    // What RAUC does around an install: other slot bad, then primary.
    bench
        .rauc(&["status", "mark-bad", "other"])
        .expect("mark-bad");
    bench
        .rauc(&["status", "mark-active", "other"])
        .expect("mark-active");
    assert_eq!(
        bench.status(),
        ("rootfs.1".into(), "good".into(), "good".into())
    );
    assert_eq!(
        std::fs::read_to_string(bench.path("data/fleet/boot/attempts")).expect("record"),
        "slot=B\nstate=trial\nattempts-left=3\n"
    );
    assert_eq!(
        bench.committed(),
        Slot::A,
        "arming does not touch autoboot.txt"
    );
    // Marking the slot that is not booted good is refused, and RAUC says so.
    let refused = bench
        .rauc(&["status", "mark-good", "other"])
        .expect_err("not booted");
    assert!(
        refused.contains("failed") || refused.contains("exit"),
        "{refused}"
    );
    // The trial boot; the health gate passes; RAUC commits through the backend.
    bench.boot(Slot::B, true);
    bench
        .rauc(&["status", "mark-good", "booted"])
        .expect("mark-good");
    assert_eq!(bench.committed(), Slot::B);
    assert_eq!(
        bench.status(),
        ("rootfs.1".into(), "good".into(), "good".into())
    );
    let calls = std::fs::read_to_string(bench.path("calls.log")).expect("calls");
    for call in [
        "get-primary",
        "get-state A",
        "get-state B",
        "set-state B bad",
        "set-primary B",
        "set-state B good",
    ] {
        assert!(
            calls.lines().any(|l| l == call),
            "RAUC never called `{call}`:\n{calls}"
        );
    }
}
