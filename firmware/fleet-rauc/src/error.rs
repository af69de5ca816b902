//! Errors of the RAUC adapter.
use std::path::PathBuf;

use fleet_core::ports::PortError;

/// Everything that can go wrong talking to RAUC. Callers branch on [`RaucError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    #[error("unable to connect to d-bus at {address}")]
    Connect {
        address: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("unable to reach rauc: {service} has no owner on the bus")]
    NotRunning { service: &'static str },
    #[error("unable to call rauc {method}")]
    Call {
        method: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("unable to call rauc {method}: no answer within {seconds} s")]
    CallTimedOut { method: &'static str, seconds: u64 },
    #[error("unable to call rauc {method}: rauc is busy with another operation ({reason})")]
    Busy {
        method: &'static str,
        reason: String,
    },
    #[error("unable to install bundle {bundle}: rauc refused it: {reason}")]
    Refused { bundle: PathBuf, reason: String },
    #[error(
        "unable to install bundle {bundle}: rauc restarted or stopped during install {transaction} (owner {before} became {after})"
    )]
    Restarted {
        bundle: PathBuf,
        transaction: String,
        before: String,
        after: String,
    },
    #[error("unable to install bundle {bundle}: lost the d-bus connection during the install")]
    ConnectionLost { bundle: PathBuf },
    #[error("unable to install bundle {bundle}: rauc did not complete within {seconds} s")]
    InstallTimedOut { bundle: PathBuf, seconds: u64 },
    #[error(
        "unable to install bundle {bundle}: this rauc cannot check the manifest hash (require-manifest-hash), and the adapter is set to enforce it"
    )]
    ManifestHashUnsupported { bundle: PathBuf },
    #[error("unable to install bundle {bundle}: the path must be absolute and valid utf-8")]
    BundlePath { bundle: PathBuf },
    #[error(
        "unable to install bundle {bundle} into slot {requested}: slot {booted} runs, so only slot {inactive} may be written"
    )]
    WrongSlot {
        bundle: PathBuf,
        requested: fleet_core::slot::Slot,
        booted: fleet_core::slot::Slot,
        inactive: fleet_core::slot::Slot,
    },
    #[error("unable to confirm the install: slot {slot} is armed but what it holds is unknown")]
    ArmedUnknown {
        slot: fleet_core::slot::Slot,
        #[source]
        source: Box<RaucError>,
    },
    #[error("unable to find rauc slot for {what}: {detail}")]
    UnknownSlot { what: String, detail: String },
    #[error("unable to parse version {text:?} of rauc slot {slot}")]
    Version {
        slot: String,
        text: String,
        #[source]
        source: semver::Error,
    },
    #[error(
        "unable to confirm install of {bundle}: rauc completed but {primary} is primary, not {expected}"
    )]
    NotArmed {
        bundle: PathBuf,
        primary: String,
        expected: String,
    },
    #[error("unable to mark rauc slot {slot} {state}")]
    Mark {
        slot: String,
        state: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
}

impl RaucError {
    /// True when the same call may succeed later: RAUC not (yet) running, restarting, busy, or
    /// the bus hiccuped. False when RAUC decided against the bundle or the setup is wrong.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            RaucError::Connect { .. }
            | RaucError::NotRunning { .. }
            | RaucError::CallTimedOut { .. }
            | RaucError::Busy { .. }
            | RaucError::Restarted { .. }
            | RaucError::ConnectionLost { .. }
            | RaucError::InstallTimedOut { .. } => true,
            RaucError::Call { source, .. } | RaucError::Mark { source, .. } => {
                is_transport_error(source)
            }
            RaucError::Refused { .. }
            | RaucError::ManifestHashUnsupported { .. }
            | RaucError::BundlePath { .. }
            | RaucError::WrongSlot { .. }
            | RaucError::ArmedUnknown { .. }
            | RaucError::UnknownSlot { .. }
            | RaucError::Version { .. }
            | RaucError::NotArmed { .. } => false,
        }
    }

    /// RAUC's own words, when RAUC refused a bundle: what the station reports upstream.
    #[must_use]
    pub fn rauc_reason(&self) -> Option<&str> {
        match self {
            RaucError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl PortError for RaucError {
    fn is_retryable(&self) -> bool {
        RaucError::is_retryable(self)
    }

    fn armed_slot(&self) -> Option<fleet_core::slot::Slot> {
        match self {
            RaucError::ArmedUnknown { slot, .. } => Some(*slot),
            _ => None,
        }
    }
}

/// A D-Bus error that says nothing about RAUC's decision: the transport failed, or the service
/// went away between lookup and call.
fn is_transport_error(error: &zbus::Error) -> bool {
    match error {
        zbus::Error::InputOutput(_) | zbus::Error::Handshake(_) => true,
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.NoReply"
                | "org.freedesktop.DBus.Error.Disconnected"
                | "org.freedesktop.DBus.Error.Timeout"
        ),
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_)
                | zbus::fdo::Error::NameHasNoOwner(_)
                | zbus::fdo::Error::NoReply(_)
                | zbus::fdo::Error::Disconnected(_)
                | zbus::fdo::Error::Timeout(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_bundle_is_not_retried_but_a_restart_is() {
        let refused = RaucError::Refused {
            bundle: "/data/b.raucb".into(),
            reason: "signature verification failed".into(),
        };
        assert!(!refused.is_retryable());
        assert_eq!(refused.rauc_reason(), Some("signature verification failed"));
        let restarted = RaucError::Restarted {
            bundle: "/data/b.raucb".into(),
            transaction: "t1".into(),
            before: ":1.4".into(),
            after: String::new(),
        };
        assert!(restarted.is_retryable());
    }

    #[test]
    fn a_failed_call_is_retried_only_when_the_transport_failed() {
        let io = RaucError::Call {
            method: "GetSlotStatus",
            source: Box::new(zbus::Error::InputOutput(std::sync::Arc::new(
                std::io::Error::from(std::io::ErrorKind::BrokenPipe),
            ))),
        };
        assert!(io.is_retryable());
        let denied = RaucError::Call {
            method: "GetSlotStatus",
            source: Box::new(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(
                "policy".into(),
            )))),
        };
        assert!(!denied.is_retryable());
        let no_reply = RaucError::Call {
            method: "GetSlotStatus",
            source: Box::new(zbus::Error::FDO(Box::new(zbus::fdo::Error::NoReply(
                "timeout".into(),
            )))),
        };
        assert!(no_reply.is_retryable());
    }

    #[test]
    fn messages_read_unable_to() {
        let e = RaucError::NotRunning {
            service: "de.pengutronix.rauc",
        };
        assert!(e.to_string().starts_with("unable to "));
    }
}
