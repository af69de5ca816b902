//! `autoboot.txt` on the Pi 5's config partition: rendered and parsed strictly.
//!
//! The firmware reads it before anything else. We only ever write one shape:
//!
//! ```text
//! [all]
//! tryboot_a_b=1
//! boot_partition=2
//! [tryboot]
//! boot_partition=3
//! ```
//!
//! `[all]` names the committed slot's boot partition, `[tryboot]` the other one, used only on
//! the single boot after the one-shot tryboot flag was set. The parser accepts exactly that
//! shape (plus blank lines and `#` comments) and refuses anything else, so a file we did not
//! write is never mistaken for one we did.
use crate::slot::Slot;

/// Longest `autoboot.txt` the parser reads; ours is about 60 bytes.
pub const MAX_AUTOBOOT_LEN: usize = 4096;

/// Boot (FAT) partition numbers of the two slots, as `boot_partition` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootPartitions {
    pub a: u8,
    pub b: u8,
}

impl Default for BootPartitions {
    /// The contract's layout: p2 `boot-a`, p3 `boot-b`.
    fn default() -> Self {
        BootPartitions { a: 2, b: 3 }
    }
}

impl BootPartitions {
    #[must_use]
    pub fn of(&self, slot: Slot) -> u8 {
        match slot {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    /// The slot whose boot partition is `partition`, if any.
    #[must_use]
    pub fn slot(&self, partition: u8) -> Option<Slot> {
        if partition == self.a {
            Some(Slot::A)
        } else if partition == self.b {
            Some(Slot::B)
        } else {
            None
        }
    }
}

/// What `autoboot.txt` says: which slot is committed. The `[tryboot]` slot is always the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoboot {
    pub committed: Slot,
}

impl Autoboot {
    /// The slot the firmware boots when the tryboot flag is set.
    #[must_use]
    pub fn tryboot(self) -> Slot {
        self.committed.other()
    }

    /// The file's exact bytes.
    #[must_use]
    pub fn render(self, partitions: &BootPartitions) -> String {
        format!(
            "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
            partitions.of(self.committed),
            partitions.of(self.tryboot())
        )
    }

    /// Parses a file written by [`Autoboot::render`] (blank lines and `#` comments allowed).
    pub fn parse(text: &str, partitions: &BootPartitions) -> Result<Autoboot, AutobootError> {
        if text.len() > MAX_AUTOBOOT_LEN {
            return Err(AutobootError::TooLong { len: text.len() });
        }
        #[derive(PartialEq, Clone, Copy)]
        enum Section {
            None,
            All,
            Tryboot,
        }
        let mut section = Section::None;
        let (mut seen_all, mut seen_tryboot) = (false, false);
        let mut tryboot_a_b: Option<&str> = None;
        let mut all_partition: Option<&str> = None;
        let mut tryboot_partition: Option<&str> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                let (next, seen) = match line {
                    "[all]" => (Section::All, &mut seen_all),
                    "[tryboot]" => (Section::Tryboot, &mut seen_tryboot),
                    _ => return Err(AutobootError::UnknownSection { line: line_no }),
                };
                if *seen {
                    return Err(AutobootError::Duplicate { line: line_no });
                }
                *seen = true;
                section = next;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(AutobootError::Malformed { line: line_no });
            };
            let slot = match (section, key.trim()) {
                (Section::All, "tryboot_a_b") => &mut tryboot_a_b,
                (Section::All, "boot_partition") => &mut all_partition,
                (Section::Tryboot, "boot_partition") => &mut tryboot_partition,
                _ => return Err(AutobootError::UnknownKey { line: line_no }),
            };
            if slot.is_some() {
                return Err(AutobootError::Duplicate { line: line_no });
            }
            *slot = Some(value.trim());
        }
        if tryboot_a_b != Some("1") {
            return Err(AutobootError::TrybootAbOff);
        }
        let committed = parse_partition(all_partition, partitions)?;
        let tryboot = parse_partition(tryboot_partition, partitions)?;
        if tryboot != committed.other() {
            return Err(AutobootError::SamePartition);
        }
        Ok(Autoboot { committed })
    }
}

fn parse_partition(
    value: Option<&str>,
    partitions: &BootPartitions,
) -> Result<Slot, AutobootError> {
    let value = value.ok_or(AutobootError::MissingBootPartition)?;
    value
        .parse::<u8>()
        .ok()
        .and_then(|p| partitions.slot(p))
        .ok_or_else(|| AutobootError::UnknownPartition {
            value: value.to_owned(),
        })
}

/// An `autoboot.txt` this flow did not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutobootError {
    #[error("unable to parse autoboot.txt: {len} bytes is longer than {MAX_AUTOBOOT_LEN}")]
    TooLong { len: usize },
    #[error("unable to parse autoboot.txt: unknown section on line {line}")]
    UnknownSection { line: usize },
    #[error("unable to parse autoboot.txt: unknown key on line {line}")]
    UnknownKey { line: usize },
    #[error("unable to parse autoboot.txt: duplicate on line {line}")]
    Duplicate { line: usize },
    #[error("unable to parse autoboot.txt: line {line} is not key=value")]
    Malformed { line: usize },
    #[error("unable to parse autoboot.txt: [all] does not set tryboot_a_b=1")]
    TrybootAbOff,
    #[error("unable to parse autoboot.txt: boot_partition missing in [all] or [tryboot]")]
    MissingBootPartition,
    #[error("unable to parse autoboot.txt: boot_partition {value:?} names no slot")]
    UnknownPartition { value: String },
    #[error("unable to parse autoboot.txt: [all] and [tryboot] name the same slot")]
    SamePartition,
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BootPartitions = BootPartitions { a: 2, b: 3 };

    #[test]
    fn committed_a_renders_the_contracts_exact_file() {
        assert_eq!(
            Autoboot { committed: Slot::A }.render(&P),
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
        );
        assert_eq!(
            Autoboot { committed: Slot::B }.render(&P),
            "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
        );
    }

    #[test]
    fn rendered_files_parse_back_to_the_same_slot() {
        for committed in Slot::ALL {
            let text = Autoboot { committed }.render(&P);
            assert_eq!(Autoboot::parse(&text, &P), Ok(Autoboot { committed }));
        }
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_accepted() {
        let text = "# fleet\r\n[all]\r\ntryboot_a_b=1\r\n\r\nboot_partition=3\r\n[tryboot]\r\nboot_partition=2\r\n";
        assert_eq!(
            Autoboot::parse(text, &P),
            Ok(Autoboot { committed: Slot::B })
        );
    }

    #[test]
    fn files_we_did_not_write_are_refused() {
        use AutobootError as E;
        let cases: &[(&str, E)] = &[
            ("", E::TrybootAbOff),
            (
                "[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
                E::TrybootAbOff,
            ),
            (
                "[all]\ntryboot_a_b=0\nboot_partition=2\n[tryboot]\nboot_partition=3\n",
                E::TrybootAbOff,
            ),
            (
                "[all]\ntryboot_a_b=1\n[tryboot]\nboot_partition=3\n",
                E::MissingBootPartition,
            ),
            (
                "[all]\ntryboot_a_b=1\nboot_partition=2\n",
                E::MissingBootPartition,
            ),
            (
                "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n",
                E::SamePartition,
            ),
            (
                "[all]\ntryboot_a_b=1\nboot_partition=5\n[tryboot]\nboot_partition=3\n",
                E::UnknownPartition { value: "5".into() },
            ),
            (
                "[all]\ntryboot_a_b=1\nboot_partition=x\n[tryboot]\nboot_partition=3\n",
                E::UnknownPartition { value: "x".into() },
            ),
            ("[pi4]\n", E::UnknownSection { line: 1 }),
            ("[all]\nkernel=foo\n", E::UnknownKey { line: 2 }),
            ("tryboot_a_b=1\n", E::UnknownKey { line: 1 }),
            ("[tryboot]\ntryboot_a_b=1\n", E::UnknownKey { line: 2 }),
            ("[all]\nboot_partition\n", E::Malformed { line: 2 }),
            ("[all]\n[all]\n", E::Duplicate { line: 2 }),
            (
                "[all]\nboot_partition=2\nboot_partition=3\n",
                E::Duplicate { line: 3 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Autoboot::parse(text, &P).as_ref(),
                Err(expected),
                "{text:?}"
            );
        }
        let long = "#".repeat(MAX_AUTOBOOT_LEN + 1);
        assert!(matches!(Autoboot::parse(&long, &P), Err(E::TooLong { .. })));
    }
}
