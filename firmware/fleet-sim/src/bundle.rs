//! The simulated bundle format: a short text header, a blank line, then the slot payload.
//!
//! ```text
//! fleet-sim-bundle 1
//! version=1.2.0
//! compatible=fleet-sim
//! behaviour=normal
//!
//! <payload bytes>
//! ```
//!
//! `behaviour` tells the simulated hardware how the installed slot behaves: `normal`,
//! `unhealthy` (boots, fails its health check) or `unbootable` (never comes up).
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SimError;

/// First line of every simulated bundle.
pub const MAGIC: &str = "fleet-sim-bundle 1";
/// Largest header accepted, in bytes.
pub const MAX_HEADER: usize = 4096;

/// How a slot holding this image behaves on the simulated hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    #[default]
    Normal,
    /// Boots, but its health check fails.
    Unhealthy,
    /// Never comes up: every boot attempt of the slot fails.
    Unbootable,
}

impl Behaviour {
    fn as_str(self) -> &'static str {
        match self {
            Behaviour::Normal => "normal",
            Behaviour::Unhealthy => "unhealthy",
            Behaviour::Unbootable => "unbootable",
        }
    }
}

/// The parsed header of a simulated bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleHeader {
    pub version: semver::Version,
    pub compatible: String,
    pub behaviour: Behaviour,
    /// Offset of the payload in the file.
    pub payload_offset: usize,
}

/// Builds a simulated bundle in memory.
#[must_use]
pub fn build(
    version: &semver::Version,
    compatible: &str,
    behaviour: Behaviour,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 128);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{MAGIC}\nversion={version}\ncompatible={compatible}\nbehaviour={}\n\n",
        behaviour.as_str()
    );
    out.extend_from_slice(payload);
    out
}

/// Writes a simulated bundle file (for tests, `fleetctl demo` and the benchmark).
pub fn write(
    path: &Path,
    version: &semver::Version,
    compatible: &str,
    behaviour: Behaviour,
    payload: &[u8],
) -> Result<(), SimError> {
    std::fs::write(path, build(version, compatible, behaviour, payload)).map_err(|source| {
        SimError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Parses the header at the start of `head` (the first [`MAX_HEADER`] bytes of a bundle or
/// more).
pub fn parse_header(path: &Path, head: &[u8]) -> Result<BundleHeader, SimError> {
    let bad = |reason: &str| SimError::BadBundle {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let window = &head[..head.len().min(MAX_HEADER)];
    let end = window
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or_else(|| bad("no header end within 4 KiB"))?;
    let text = std::str::from_utf8(&window[..end]).map_err(|_| bad("header is not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("not a simulated bundle"));
    }
    let (mut version, mut compatible, mut behaviour) = (None, None, Behaviour::Normal);
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| bad("header line without '='"))?;
        match k {
            "version" => {
                version = Some(semver::Version::parse(v).map_err(|_| bad("invalid version"))?);
            }
            "compatible" => compatible = Some(v.to_owned()),
            "behaviour" => {
                behaviour = match v {
                    "normal" => Behaviour::Normal,
                    "unhealthy" => Behaviour::Unhealthy,
                    "unbootable" => Behaviour::Unbootable,
                    _ => return Err(bad("unknown behaviour")),
                }
            }
            _ => return Err(bad("unknown header key")),
        }
    }
    Ok(BundleHeader {
        version: version.ok_or_else(|| bad("no version"))?,
        compatible: compatible.ok_or_else(|| bad("no compatible"))?,
        behaviour,
        payload_offset: end + 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_bundle_parses_back() {
        let v = semver::Version::new(1, 2, 3);
        let b = build(&v, "fleet-sim", Behaviour::Unbootable, b"xyz");
        let h = parse_header(Path::new("b"), &b).expect("parses");
        assert_eq!(h.version, v);
        assert_eq!(h.compatible, "fleet-sim");
        assert_eq!(h.behaviour, Behaviour::Unbootable);
        assert_eq!(&b[h.payload_offset..], b"xyz");
    }

    #[test]
    fn garbage_is_not_a_bundle() {
        for bad in [&b"hello"[..], b"fleet-sim-bundle 1\nversion=x\n\n", b"\n\n"] {
            assert!(parse_header(Path::new("b"), bad).is_err());
        }
    }
}
