//! Newtypes for identities and versions.
use std::fmt;

use serde::{Deserialize, Serialize};

/// Maximum length of a device id or group name, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("unable to accept empty identifier")]
    Empty,
    #[error("unable to accept identifier longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("unable to accept identifier {0:?}: only a-z, 0-9, '-' and '_' are allowed")]
    BadChar(String),
}

fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(IdError::BadChar(s.to_owned()));
    }
    Ok(())
}

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` (lower-case ASCII letters, digits, `-`, `_`; 1..=64 bytes): it
            /// becomes an MQTT topic level, so nothing else is allowed.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_id(&s)?;
                Ok(Self(s))
            }
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// A station's stable identity, e.g. `stn-0042`.
    DeviceId
);
id_newtype!(
    /// A group of stations, e.g. `canary` or `forest-north`.
    GroupId
);
id_newtype!(
    /// The id of one update (one bundle release pushed to the fleet).
    UpdateId
);

/// Firmware version: semantic versioning.
pub type Version = semver::Version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_topic_level_are_refused() {
        for bad in ["", "a/b", "a+b", "#", "A", "x y", &"a".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(DeviceId::new("stn-0042_x").is_ok());
    }
}
