//! RAUC's view of the slots, parsed from `GetSlotStatus`, and the mapping between RAUC slot
//! names (`rootfs.0`) and fleet's [`Slot`]s. Pure: no bus, no files.
use std::collections::HashMap;

use fleet_core::ids::Version;
use fleet_core::slot::Slot;
use zbus::zvariant::{OwnedValue, Value};

use crate::error::RaucError;
use crate::proxy::RawSlotStatus;

/// What RAUC says about one slot. Field names follow RAUC's keys; absent keys are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucSlot {
    /// RAUC slot name, e.g. `rootfs.1`.
    pub name: String,
    /// Slot class, e.g. `rootfs`, `bootfs`.
    pub class: String,
    pub device: String,
    pub bootname: Option<String>,
    /// The parent slot name for child slots (`bootfs.1` → `rootfs.1`).
    pub parent: Option<String>,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad` as the bootloader backend reports it (bootable slots only).
    pub boot_status: Option<String>,
    /// RAUC's install status of the slot (`ok`, `failed`, ...).
    pub status: Option<String>,
    pub bundle_compatible: Option<String>,
    pub bundle_version: Option<String>,
    /// sha256 of the image last written to the slot.
    pub installed_sha256: Option<String>,
    pub installed_timestamp: Option<String>,
}

impl RaucSlot {
    /// Parses one `GetSlotStatus` entry. Unknown keys are ignored (newer RAUC adds keys).
    #[must_use]
    pub fn from_raw(raw: &RawSlotStatus) -> RaucSlot {
        let (name, props) = raw;
        let text = |key: &str| string_of(props, key);
        RaucSlot {
            name: name.clone(),
            class: text("class").unwrap_or_default(),
            device: text("device").unwrap_or_default(),
            bootname: text("bootname"),
            parent: text("parent"),
            state: text("state").unwrap_or_default(),
            boot_status: text("boot-status"),
            status: text("status"),
            bundle_compatible: text("bundle.compatible"),
            bundle_version: text("bundle.version"),
            installed_sha256: text("sha256"),
            installed_timestamp: text("installed.timestamp"),
        }
    }

    /// The fleet slot this RAUC slot boots as, from its bootname (`A`/`B`).
    #[must_use]
    pub fn fleet_slot(&self) -> Option<Slot> {
        self.bootname.as_deref().and_then(|b| b.parse().ok())
    }

    /// The installed bundle version, when RAUC recorded one.
    pub fn version(&self) -> Result<Option<Version>, RaucError> {
        match self.bundle_version.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => Version::parse(text)
                .map(Some)
                .map_err(|source| RaucError::Version {
                    slot: self.name.clone(),
                    text: text.to_owned(),
                    source,
                }),
        }
    }
}

fn string_of(props: &HashMap<String, OwnedValue>, key: &str) -> Option<String> {
    match props.get(key).map(|v| &**v) {
        Some(Value::Str(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// All slots RAUC knows, with lookups between RAUC names and fleet slots. Only slots of
/// `class` (the root filesystem class, `rootfs` by default) count as fleet slots; child slots
/// (`bootfs.N`) follow their parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    class: String,
    slots: Vec<RaucSlot>,
}

impl SlotTable {
    #[must_use]
    pub fn new(class: &str, slots: Vec<RaucSlot>) -> SlotTable {
        SlotTable {
            class: class.to_owned(),
            slots,
        }
    }

    #[must_use]
    pub fn all(&self) -> &[RaucSlot] {
        &self.slots
    }

    /// The root-filesystem slot RAUC uses for `slot`.
    pub fn get(&self, slot: Slot) -> Result<&RaucSlot, RaucError> {
        let mut found = self
            .slots
            .iter()
            .filter(|s| s.class == self.class && s.fleet_slot() == Some(slot));
        match (found.next(), found.next()) {
            (Some(s), None) => Ok(s),
            (None, _) => Err(RaucError::UnknownSlot {
                what: format!("slot {slot}"),
                detail: format!("no {} slot has bootname {slot}", self.class),
            }),
            (Some(a), Some(b)) => Err(RaucError::UnknownSlot {
                what: format!("slot {slot}"),
                detail: format!("both {} and {} have bootname {slot}", a.name, b.name),
            }),
        }
    }

    /// The fleet slot of a RAUC slot name; a child slot maps to its parent's slot.
    pub fn by_name(&self, name: &str) -> Result<Slot, RaucError> {
        let unknown = |detail: &str| RaucError::UnknownSlot {
            what: format!("rauc slot {name}"),
            detail: detail.to_owned(),
        };
        let slot = self
            .slots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| unknown("rauc does not list it"))?;
        let root = match &slot.parent {
            Some(parent) => self
                .slots
                .iter()
                .find(|s| &s.name == parent)
                .ok_or_else(|| unknown("its parent is not listed"))?,
            None => slot,
        };
        root.fleet_slot()
            .ok_or_else(|| unknown("it has no bootname A or B"))
    }

    /// The fleet slot RAUC's `BootSlot` names: a bootname (`A`), a slot name or a device path.
    pub fn booted(&self, boot_slot: &str) -> Result<Slot, RaucError> {
        if let Ok(slot) = boot_slot.parse::<Slot>() {
            return self.get(slot).map(|_| slot);
        }
        if let Some(s) = self
            .slots
            .iter()
            .find(|s| s.class == self.class && (s.name == boot_slot || s.device == boot_slot))
        {
            return self.by_name(&s.name.clone());
        }
        if let Some(s) = self.slots.iter().find(|s| s.state == "booted") {
            return self.by_name(&s.name.clone());
        }
        Err(RaucError::UnknownSlot {
            what: format!("booted slot {boot_slot:?}"),
            detail: "no slot matches it and none is marked booted".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, pairs: &[(&str, &str)]) -> RawSlotStatus {
        let props = pairs
            .iter()
            .map(|(k, v)| {
                let value = OwnedValue::try_from(Value::from(*v)).expect("strings have no fds");
                ((*k).to_owned(), value)
            })
            .collect();
        (name.to_owned(), props)
    }

    fn pi_table() -> SlotTable {
        let slots = [
            raw(
                "rootfs.0",
                &[
                    ("class", "rootfs"),
                    ("device", "/dev/mmcblk0p5"),
                    ("bootname", "A"),
                    ("state", "booted"),
                    ("boot-status", "good"),
                    ("bundle.version", "1.2.0"),
                ],
            ),
            raw(
                "rootfs.1",
                &[
                    ("class", "rootfs"),
                    ("device", "/dev/mmcblk0p6"),
                    ("bootname", "B"),
                    ("state", "inactive"),
                    ("bundle.version", "not-semver"),
                ],
            ),
            raw(
                "bootfs.1",
                &[
                    ("class", "bootfs"),
                    ("device", "/dev/mmcblk0p3"),
                    ("parent", "rootfs.1"),
                    ("state", "inactive"),
                ],
            ),
        ];
        SlotTable::new("rootfs", slots.iter().map(RaucSlot::from_raw).collect())
    }

    #[test]
    fn slots_are_found_by_bootname_and_by_rauc_name() {
        let t = pi_table();
        assert_eq!(
            t.get(Slot::B).map(|s| s.name.as_str()).ok(),
            Some("rootfs.1")
        );
        assert_eq!(t.by_name("rootfs.0").ok(), Some(Slot::A));
        assert_eq!(
            t.by_name("bootfs.1").ok(),
            Some(Slot::B),
            "a child follows its parent"
        );
        assert!(t.by_name("rootfs.7").is_err());
    }

    #[test]
    fn booted_slot_is_read_from_a_bootname_a_device_or_the_booted_state() {
        let t = pi_table();
        assert_eq!(t.booted("A").ok(), Some(Slot::A));
        assert_eq!(t.booted("/dev/mmcblk0p6").ok(), Some(Slot::B));
        assert_eq!(t.booted("/dev/root").ok(), Some(Slot::A));
    }

    #[test]
    fn versions_parse_as_semver_and_garbage_is_an_error() {
        let t = pi_table();
        let a = t.get(Slot::A).expect("slot A is listed");
        assert_eq!(a.version().ok().flatten(), Some(Version::new(1, 2, 0)));
        assert!(t.get(Slot::B).expect("slot B is listed").version().is_err());
        assert_eq!(a.boot_status.as_deref(), Some("good"));
    }

    #[test]
    fn two_slots_with_one_bootname_are_refused() {
        let slots = [
            raw("rootfs.0", &[("class", "rootfs"), ("bootname", "A")]),
            raw("rootfs.1", &[("class", "rootfs"), ("bootname", "A")]),
        ];
        let t = SlotTable::new("rootfs", slots.iter().map(RaucSlot::from_raw).collect());
        assert!(t.get(Slot::A).is_err());
        assert!(t.get(Slot::B).is_err());
    }
}
