//! The U-Boot boot script: rendered from its one source, compiled by the real `mkimage`, and
//! checked against the model (`fleet_core::boot::uboot`) it must match.
use std::path::PathBuf;
use std::process::Command;

use fleet_core::boot::uboot;

fn source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../meta-fleet/recipes-bsp/u-boot/files/boot.cmd.in");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("unable to read {}: {e}", path.display()))
}

/// The same substitution the Yocto recipe's `do_compile` does.
fn render(pairs: &[(&str, &str)]) -> String {
    let mut text = source();
    for (key, value) in pairs {
        text = text.replace(&format!("@@{key}@@"), value);
    }
    text
}

const QEMU: &[(&str, &str)] = &[
    ("BOOT_DEVTYPE", "virtio"),
    ("BOOT_DEVNUM", "0"),
    ("ROOT_DISK", "vda"),
    ("ROOT_PART_PREFIX", ""),
    ("BOOT_ATTEMPTS", "3"),
    ("CONSOLE", "ttyAMA0"),
    ("KERNEL_IMAGETYPE", "Image"),
    ("ENV_SIZE", "0x4000"),
];
const PI: &[(&str, &str)] = &[
    ("BOOT_DEVTYPE", "mmc"),
    ("BOOT_DEVNUM", "0"),
    ("ROOT_DISK", "mmcblk0"),
    ("ROOT_PART_PREFIX", "p"),
    ("BOOT_ATTEMPTS", "3"),
    ("CONSOLE", "ttyAMA10"),
    ("KERNEL_IMAGETYPE", "Image"),
    ("ENV_SIZE", "0x4000"),
];

#[test]
fn rendered_script_has_no_placeholder_left_for_qemu_or_pi() {
    for pairs in [QEMU, PI] {
        let text = render(pairs);
        assert!(
            !text.contains("@@"),
            "unsubstituted placeholder in:\n{text}"
        );
    }
    assert!(render(QEMU).contains("root=/dev/vda2 rauc.slot=A"));
    assert!(render(PI).contains("root=/dev/mmcblk0p3 rauc.slot=B"));
}

#[test]
fn rendered_script_compiles_with_mkimage() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, pairs) in [("qemu", QEMU), ("pi", PI)] {
        let cmd = dir.path().join(format!("{name}.cmd"));
        let scr = dir.path().join(format!("{name}.scr"));
        std::fs::write(&cmd, render(pairs)).expect("write boot.cmd");
        let out = Command::new("mkimage")
            .args([
                "-A",
                "arm64",
                "-T",
                "script",
                "-C",
                "none",
                "-n",
                "fleet A/B boot script",
                "-d",
            ])
            .arg(&cmd)
            .arg(&scr)
            .output()
            .expect("mkimage runs (install it with tests/setup.d/10-bootctl.sh)");
        assert!(
            out.status.success(),
            "mkimage failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = Command::new("mkimage")
            .arg("-l")
            .arg(&scr)
            .output()
            .expect("mkimage -l");
        let listing = String::from_utf8_lossy(&listing.stdout);
        assert!(listing.contains("Script"), "{listing}");
        // A legacy image: 64-byte header, then the script with its length table.
        let image = std::fs::read(&scr).expect("read boot.scr");
        assert_eq!(&image[..4], &[0x27, 0x05, 0x19, 0x56], "legacy image magic");
        assert!(image.len() > 64 + source().len() / 2);
    }
}

/// The parts of the script the model stands for, found in the script's own text. Together
/// with the line-by-line argument in docs/boot-flows.md this is the equivalence check that
/// does not need a U-Boot to run.
#[test]
fn script_matches_the_model_it_is_checked_against() {
    let text = render(QEMU);
    // Defaults: order and attempts.
    assert!(text.contains(&format!(
        "test -n \"${{BOOT_ORDER}}\" || setenv BOOT_ORDER \"{}\"",
        uboot::DEFAULT_ORDER
    )));
    for slot in ["A", "B"] {
        assert!(text.contains(&format!(
            "test -n \"${{BOOT_{slot}_LEFT}}\" || setenv BOOT_{slot}_LEFT 3"
        )));
        // Take the slot only with boots left, decrement before booting.
        assert!(text.contains(&format!("if test ${{BOOT_{slot}_LEFT}} -gt 0; then")));
        assert!(text.contains(&format!(
            "setexpr BOOT_{slot}_LEFT ${{BOOT_{slot}_LEFT}} - 1"
        )));
    }
    // The variables written back are exactly the model's EXPORTED (FLEET_TRIAL only when set).
    let with_trial = format!(
        "env export -c -s ${{envsize}} ${{envaddr}} {}",
        uboot::EXPORTED.join(" ")
    );
    let without_trial = format!(
        "env export -c -s ${{envsize}} ${{envaddr}} {}",
        uboot::EXPORTED[..3].join(" ")
    );
    assert!(text.contains(&with_trial) && text.contains(&without_trial));
    assert_eq!(
        text.matches("env export").count(),
        2,
        "every write goes through fleet_save"
    );
    // Out of boots: both counters back to the attempts, written, then reset.
    let reset = text
        .split("if test -z \"${fleet_part}\"; then")
        .nth(1)
        .expect("exhausted branch");
    let reset = &reset[..reset.find("\nfi\n").expect("end of branch")];
    for needle in [
        "setenv BOOT_A_LEFT 3",
        "setenv BOOT_B_LEFT 3",
        "run fleet_save",
        "reset",
    ] {
        assert!(reset.contains(needle), "{needle} missing from:\n{reset}");
    }
    assert!(!reset.contains("BOOT_ORDER"), "the policy keeps BOOT_ORDER");
    // The write happens before the kernel is loaded.
    assert!(
        text.rfind("run fleet_save").expect("save")
            < text
                .find("${kernel_addr_r} /boot/Image")
                .expect("kernel load")
    );
}
