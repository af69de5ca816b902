//! The parts of the image agree with each other and with the docs (a drift check): the
//! compatible string, the data paths, the version, the bundle's hook, the keyring purpose and the
//! station key's mode are read from `meta-fleet/`, `bundles/`, `Cargo.toml` and `docs/` and
//! compared; every sample configuration in `docs/` parses with its daemon's own checker.
use fleet_testkit::docs::fenced_blocks;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `NAME ??= "value"` of the distro configuration.
fn distro(name: &str) -> String {
    let conf = read("meta-fleet/conf/distro/fleet.conf");
    let prefix = format!("{name} ??= \"");
    conf.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{name} not in fleet.conf"))
        .to_owned()
}

/// Every machine of kas/machine/.
fn machines() -> Vec<String> {
    let dir = repo().join("kas/machine");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .expect("kas/machine")
        .flatten()
        .filter_map(|e| {
            std::fs::read_to_string(e.path())
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("machine: ").map(str::to_owned))
        })
        .collect();
    out.sort();
    out
}

fn docs() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![repo().join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("docs").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                let text = std::fs::read_to_string(&p).expect("doc");
                out.push((p, text));
            }
        }
    }
    out
}

#[test]
fn the_compatible_string_is_the_same_in_the_distro_the_recipes_the_bundle_and_the_docs() {
    assert_eq!(distro("FLEET_COMPATIBLE"), "fleet-${MACHINE}");
    let compatibles: Vec<String> = machines().iter().map(|m| format!("fleet-{m}")).collect();
    assert_eq!(compatibles, ["fleet-qemuarm64", "fleet-raspberrypi5"]);
    // Every place that states it takes it from FLEET_COMPATIBLE.
    let bundle = read("meta-fleet/recipes-core/bundles/fleet-bundle.bb");
    assert!(bundle.contains("RAUC_BUNDLE_COMPATIBLE = \"${FLEET_COMPATIBLE}\""));
    let rauc_conf = read("meta-fleet/recipes-core/rauc/fleet-rauc-conf.bb");
    assert!(rauc_conf.contains("s,@FLEET_COMPATIBLE@,${FLEET_COMPATIBLE},g"));
    for m in ["mmcblk0", "nvme0n1", "vda"] {
        let conf = read(&format!(
            "meta-fleet/recipes-core/rauc/files/system-{m}.conf"
        ));
        assert!(
            conf.contains("compatible=@FLEET_COMPATIBLE@"),
            "system-{m}.conf"
        );
    }
    let firmware = read("meta-fleet/recipes-fleet/fleet-firmware/fleet-firmware_git.bb");
    assert!(firmware.contains("s,@COMPATIBLE@,${FLEET_COMPATIBLE},g"));
    let updated = read("meta-fleet/recipes-fleet/fleet-firmware/files/updated.toml");
    assert!(updated.contains("compatible = \"@COMPATIBLE@\""));
    // Every compatible the docs name is one an image has, or the simulated station's own
    // (`fleet-sim`, updated.md's "Simulated stations": no image carries it).
    let named = regex_lite_compatibles();
    assert!(!named.is_empty());
    for (doc, c) in named {
        assert!(
            compatibles.contains(&c) || c == "fleet-sim",
            "{} names compatible {c:?}; the images are {compatibles:?}",
            doc.display()
        );
    }
}

/// `compatible = "fleet-x"`, `"compatible": "fleet-x"`, `--compatible fleet-x` and
/// `compatible fleet-x` in the docs.
fn regex_lite_compatibles() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (path, text) in docs() {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("compatible") {
            rest = &rest[i + "compatible".len()..];
            let after = rest.trim_start_matches(['"', ' ', '=', ':']);
            if let Some(v) = after.strip_prefix("fleet-") {
                let name: String = v
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() && !name.ends_with('-') {
                    out.push((path.clone(), format!("fleet-{name}")));
                }
            }
        }
    }
    out
}

#[test]
fn data_paths_agree_between_the_distro_units_shipped_configs_provisioning_and_hook() {
    assert_eq!(distro("FLEET_DATA_DIR"), "/data");
    let files = "meta-fleet/recipes-fleet/fleet-firmware/files";
    let recorder = read(&format!("{files}/recorderd.toml"));
    assert!(recorder.contains("data-dir = \"@DATADIR@/fleet/recordings\""));
    let retention = read(&format!("{files}/retentiond.toml"));
    assert!(retention.contains("recordings-dir = \"@DATADIR@/fleet/recordings/data\""));
    let rec_unit = read(&format!("{files}/fleet-recorderd.service"));
    assert!(rec_unit.contains("ReadWritePaths=@DATADIR@/fleet/recordings\n"));
    let tmpfiles = read(&format!("{files}/fleet-firmware.tmpfiles"));
    assert!(tmpfiles.contains("d @DATADIR@/fleet/recordings/data "));
    assert!(tmpfiles.contains("d @DATADIR@/fleet/identity "));
    // Each unit reads its image defaults, then the station settings provisioning writes.
    for d in ["updated", "recorderd", "retentiond", "uploaderd"] {
        let unit = read(&format!("{files}/fleet-{d}.service"));
        assert!(
            unit.contains(&format!(
                "--config /etc/fleet/{d}.toml --station-config @DATADIR@/fleet/identity/{d}.toml"
            )),
            "fleet-{d}.service"
        );
    }
    let script = read("meta-fleet/recipes-core/fleet-rootfs/files/fleet-provision");
    assert!(script.contains("dst=$data/fleet/identity"));
    // The bundle hook's version floor is where fleet-updated writes it by default.
    let hook = read("bundles/hooks/install-check");
    assert!(hook.contains("${FLEET_VERSION_FLOOR_FILE:-/data/fleet/update/version-floor}"));
    assert!(tmpfiles.contains("d @DATADIR@/fleet/update "));
    let updated = read("docs/reference/updated.md");
    assert!(updated.contains("`<data-dir>/fleet/update/version-floor`"));
    // No doc points a daemon at the old recorder directory.
    for (path, text) in docs() {
        assert!(
            !text.contains("/data/recorder"),
            "{} still names /data/recorder",
            path.display()
        );
    }
}

#[test]
fn the_version_is_the_same_in_the_distro_the_workspace_the_bundle_and_the_image() {
    let version = distro("FLEET_VERSION");
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains(&format!("\nversion = \"{version}\"\n")),
        "workspace version != FLEET_VERSION {version}"
    );
    let bundle = read("meta-fleet/recipes-core/bundles/fleet-bundle.bb");
    assert!(bundle.contains("RAUC_BUNDLE_VERSION = \"${FLEET_VERSION}\""));
    let rootfs = read("meta-fleet/recipes-core/fleet-rootfs/fleet-rootfs.bb");
    assert!(
        rootfs.contains("printf '%s\\n' \"${FLEET_VERSION}\" > ${D}${sysconfdir}/fleet-version")
    );
    let updated = read("meta-fleet/recipes-fleet/fleet-firmware/files/updated.toml");
    assert!(updated.contains("version-file = \"/etc/fleet-version\""));
    // getting-started pushes only versions it built first.
    let gs = read("docs/getting-started.md");
    for (i, _) in gs.match_indices("--version ") {
        let v: String = gs[i + "--version ".len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        assert!(
            gs[..i].contains(&format!("FLEET_VERSION={v} ")),
            "getting-started pushes --version {v} without building FLEET_VERSION={v} first"
        );
    }
}

#[test]
fn every_bundle_carries_the_install_check_hook_and_every_keyring_wants_codesign() {
    let bundle = read("meta-fleet/recipes-core/bundles/fleet-bundle.bb");
    assert!(bundle.contains("FILESEXTRAPATHS:prepend := \"${FLEET_REPO_DIR}/bundles/hooks:\""));
    assert!(bundle.contains("RAUC_BUNDLE_HOOKS[file] = \"install-check\""));
    assert!(bundle.contains("RAUC_BUNDLE_HOOKS[hooks] = \"install-check\""));
    assert!(repo().join("bundles/hooks/install-check").exists());
    // The Pi's slot hook travels beside it; the hook hands slot events on to it by that name.
    let pi =
        read("meta-fleet/dynamic-layers/raspberrypi/recipes-core/bundles/fleet-bundle_fleet.inc");
    assert!(pi.contains("RAUC_BUNDLE_EXTRA_FILES += \"${@'bootfs-post-install'"));
    assert!(!pi.contains("RAUC_BUNDLE_HOOKS[file]"));
    assert!(
        read("bundles/hooks/install-check")
            .contains("next=\"$(dirname \"$0\")/bootfs-post-install\"")
    );
    for m in ["mmcblk0", "nvme0n1", "vda"] {
        let conf = read(&format!(
            "meta-fleet/recipes-core/rauc/files/system-{m}.conf"
        ));
        let keyring = conf.split("[keyring]").nth(1).expect("keyring section");
        let keyring = keyring.split("\n[").next().unwrap_or_default();
        assert!(
            keyring.contains("\ncheck-purpose=codesign\n"),
            "system-{m}.conf"
        );
    }
    assert!(read("keys/gen-dev-pki.sh").contains("extendedKeyUsage=critical,codeSigning"));
}

#[test]
fn the_station_key_is_0440_for_the_group_of_the_daemons_that_connect_as_security_md_says() {
    let security = read("docs/security.md");
    assert!(
        security.contains("`/data/fleet/identity/mqtt/client.key`, mode 0440, `root:fleet-mqtt`")
    );
    let script = read("meta-fleet/recipes-core/fleet-rootfs/files/fleet-provision");
    assert!(script.contains("put mqtt/client.key root:fleet-mqtt 0440"));
    // The group holds exactly the two daemons that connect as the station.
    let recipe = read("meta-fleet/recipes-fleet/fleet-firmware/fleet-firmware_git.bb");
    let members: Vec<&str> = recipe
        .split("USERADD_PARAM:")
        .skip(1)
        .filter(|p| {
            p.split('"')
                .nth(1)
                .is_some_and(|params| params.contains("fleet-mqtt"))
        })
        .filter_map(|p| p.split(' ').next())
        .collect();
    assert_eq!(members, ["fleet-updated", "fleet-reporterd"]);
}

#[test]
fn every_sample_configuration_in_the_docs_parses_with_its_daemons_checker() {
    let updated = read("docs/reference/updated.md");
    let samples = fenced_blocks(&updated, "toml");
    assert!(!samples.is_empty());
    fleet_updated::Config::parse(Path::new("docs/reference/updated.md"), &samples[0])
        .unwrap_or_else(|e| panic!("updated.md's sample: {e}"));

    let recorder = read("docs/reference/recorderd.md");
    let samples = fenced_blocks(&recorder, "toml");
    assert_eq!(samples.len(), 1);
    fleet_recorderd::config::Config::parse(
        &samples[0],
        Path::new("docs/reference/recorderd.md"),
        &fleet_recorderd::config::Limits::default(),
    )
    .unwrap_or_else(|e| panic!("recorderd.md's sample: {e}"));

    let retention = read("docs/reference/retentiond.md");
    let samples = fenced_blocks(&retention, "toml");
    assert_eq!(samples.len(), 1);
    fleet_retentiond::config::parse_at(&samples[0], Path::new("docs/reference/retentiond.md"))
        .unwrap_or_else(|e| panic!("retentiond.md's sample: {e}"));
}

#[test]
fn the_images_daemons_follow_the_clock_rule_and_the_updaters_sandbox_can_read_the_facts() {
    let files = "meta-fleet/recipes-fleet/fleet-firmware/files";
    let updated = read(&format!("{files}/updated.toml"));
    assert!(updated.contains("\nwall-clock = \"system\"\n"));
    // The other daemons ask the same rule (ADR 0004), never a file check of their own.
    for (conf, word) in [
        ("recorderd.toml", "clock-trust = \"system\""),
        ("retentiond.toml", "trust-time = \"auto\""),
        ("uploaderd.toml", "trust-time = \"auto\""),
    ] {
        let text = read(&format!("{files}/{conf}"));
        assert!(text.contains(&format!("\n{word}\n")), "{conf}: {word}");
        assert!(
            !text.contains("timesync"),
            "{conf} names a clock file of its own"
        );
    }
    let unit = read(&format!("{files}/fleet-updated.service"));
    assert!(unit.contains("\nProtectSystem=strict\n"));
    // The clock facts fleet_facts::clock reads stay visible (read-only) in the sandbox.
    for line in unit.lines().filter(|l| !l.starts_with('#')) {
        for hiding in ["InaccessiblePaths=", "TemporaryFileSystem="] {
            if line.starts_with(hiding) {
                for fact in ["/run", "/var/lib", "/sys"] {
                    assert!(
                        !line.contains(fact),
                        "fleet-updated.service hides {fact}: {line}"
                    );
                }
            }
        }
    }
}
