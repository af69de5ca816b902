//! The `--to device:<id>|group:<g>` argument.
use std::fmt;
use std::str::FromStr;

use fleet_core::ids::{DeviceId, GroupId};

/// Where an offer goes: one station or a group of stations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Device(DeviceId),
    Group(GroupId),
}

/// Why a `--to` argument was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("unable to parse target {0:?}: expected device:<id> or group:<name>")]
    Syntax(String),
    #[error("unable to parse target {input:?}: {source}")]
    Id {
        input: String,
        #[source]
        source: fleet_core::ids::IdError,
    },
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| TargetError::Syntax(s.to_owned()))?;
        let wrap = |source| TargetError::Id {
            input: s.to_owned(),
            source,
        };
        match kind {
            "device" => DeviceId::new(id).map(Target::Device).map_err(wrap),
            "group" => GroupId::new(id).map(Target::Group).map_err(wrap),
            _ => Err(TargetError::Syntax(s.to_owned())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Device(d) => write!(f, "device:{d}"),
            Target::Group(g) => write!(f, "group:{g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_from_their_two_spellings() {
        assert_eq!(
            "device:stn-1".parse::<Target>().expect("device"),
            Target::Device(DeviceId::new("stn-1").expect("id"))
        );
        assert_eq!(
            "group:canary".parse::<Target>().expect("group"),
            Target::Group(GroupId::new("canary").expect("id"))
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_input_in_the_message() {
        for bad in [
            "stn-1",
            "host:stn-1",
            "device:",
            "device:a/b",
            "group:#",
            "device:A",
        ] {
            let err = bad.parse::<Target>().expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
