//! The part of RAUC's `de.pengutronix.rauc.Installer` interface fleet uses, as a zbus proxy.
//!
//! Only what rauc 1.8 (Debian bookworm, the oldest service fleet meets) already offers is
//! declared; newer arguments (`transaction-id`, `require-manifest-hash`) travel in the
//! `InstallBundle` argument dictionary and are negotiated at call time (see `installer`).
use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

/// RAUC's well-known bus name.
pub const SERVICE: &str = "de.pengutronix.rauc";
/// RAUC's object path.
pub const PATH: &str = "/";
/// RAUC's installer interface.
pub const INTERFACE: &str = "de.pengutronix.rauc.Installer";

/// One entry of `GetSlotStatus`: the slot name and its property dictionary.
pub type RawSlotStatus = (String, HashMap<String, OwnedValue>);

#[zbus::proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/",
    gen_blocking = false
)]
pub(crate) trait RaucInstaller {
    /// Starts an install; the result arrives later as the `Completed` signal.
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// Marks a slot `good`, `bad` or `active`; returns the slot name and RAUC's message.
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;

    fn get_slot_status(&self) -> zbus::Result<Vec<RawSlotStatus>>;

    /// The slot name (`rootfs.1`) the bootloader will boot next.
    fn get_primary(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;

    /// (percentage, message, nesting depth).
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;

    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;

    /// The booted slot as RAUC detected it (its bootname, or a device path).
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;
}
