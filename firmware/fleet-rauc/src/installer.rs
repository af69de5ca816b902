//! The RAUC client: install with progress, slot status, primary, mark good/bad.
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;

use fleet_core::ports::{InstallProgress, InstallRequest, Installed, Installer};
use fleet_core::slot::Slot;
use futures_util::StreamExt;
use tracing::{debug, info, warn};
use zbus::fdo::DBusProxy;
use zbus::message::Type as MessageType;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::error::RaucError;
use crate::limits::{Limits, clip};
use crate::proxy::{INTERFACE, PATH, RaucInstallerProxy, SERVICE};
use crate::slots::{RaucSlot, SlotTable};

/// The address of the system bus on a station.
pub const SYSTEM_BUS_ADDRESS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Whether the manifest hash an offer promised must be checked by RAUC itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestHashCheck {
    /// Pass `require-manifest-hash`; refuse to install when RAUC cannot check it (rauc < 1.14).
    #[default]
    Enforce,
    /// Pass `require-manifest-hash` where RAUC supports it and install without it otherwise
    /// (the station has already verified the whole bundle's bytes against the signed offer).
    /// For hosts with an old RAUC, such as the integration tests on Debian's rauc 1.8.
    WhereSupported,
}

/// How the adapter talks to RAUC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucOptions {
    /// RAUC slot class of the root filesystem slots (their bootnames are `A` and `B`).
    pub slot_class: String,
    pub manifest_hash: ManifestHashCheck,
    pub limits: Limits,
}

impl Default for RaucOptions {
    fn default() -> Self {
        Self {
            slot_class: "rootfs".to_owned(),
            manifest_hash: ManifestHashCheck::Enforce,
            limits: Limits::default(),
        }
    }
}

/// The state RAUC's `Mark` method sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    /// Committed: boot it from now on.
    Good,
    /// Never boot it again.
    Bad,
    /// Make it primary (next boot) without changing its health.
    Active,
}

impl MarkState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MarkState::Good => "good",
            MarkState::Bad => "bad",
            MarkState::Active => "active",
        }
    }
}

/// What RAUC answered to `Mark`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub slot: Slot,
    /// RAUC's message, e.g. `marked slot rootfs.1 as good`.
    pub message: String,
}

/// A snapshot of RAUC's state for `fleet status` and the updater.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucStatus {
    pub compatible: String,
    /// `idle` or `installing`.
    pub operation: String,
    pub last_error: String,
    pub booted: Slot,
    pub primary: Slot,
    pub slots: SlotTable,
}

/// A connection to RAUC's installer on one bus. Cheap to share by reference; every call is
/// independent. Implements [`Installer`].
#[derive(Debug)]
pub struct RaucClient {
    conn: Connection,
    rauc: RaucInstallerProxy<'static>,
    bus: DBusProxy<'static>,
    options: RaucOptions,
}

impl RaucClient {
    /// Connects to the bus at `address` (a D-Bus address such as [`SYSTEM_BUS_ADDRESS`]). RAUC
    /// need not be running yet: calls fail with a retryable error until it is.
    pub async fn connect(address: &str, options: RaucOptions) -> Result<RaucClient, RaucError> {
        let connect_error = |source| RaucError::Connect {
            address: address.to_owned(),
            source: Box::new(source),
        };
        let conn = zbus::connection::Builder::address(address)
            .map_err(connect_error)?
            .max_queued(options.limits.message_queue)
            .build()
            .await
            .map_err(connect_error)?;
        let rauc = RaucInstallerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(connect_error)?;
        let bus = DBusProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(connect_error)?;
        Ok(RaucClient {
            conn,
            rauc,
            bus,
            options,
        })
    }

    #[must_use]
    pub fn options(&self) -> &RaucOptions {
        &self.options
    }

    async fn call<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = zbus::Result<T>>,
    ) -> Result<T, RaucError> {
        let limit = self.options.limits.call_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) if names_missing_service(&source) => {
                Err(RaucError::NotRunning { service: SERVICE })
            }
            Ok(Err(source)) if busy_reason(&source).is_some() => Err(RaucError::Busy {
                method,
                reason: busy_reason(&source).unwrap_or_default(),
            }),
            Ok(Err(source)) => Err(RaucError::Call {
                method,
                source: Box::new(source),
            }),
            Err(_) => Err(RaucError::CallTimedOut {
                method,
                seconds: limit.as_secs(),
            }),
        }
    }

    /// The unique bus name RAUC runs under now.
    async fn owner(&self) -> Result<String, RaucError> {
        let name = BusName::from_static_str(SERVICE).expect("the rauc service name is valid");
        let owner = self
            .call("GetNameOwner", async {
                self.bus
                    .get_name_owner(name)
                    .await
                    .map_err(zbus::Error::from)
            })
            .await?;
        Ok(owner.to_string())
    }

    /// Every slot RAUC knows.
    pub async fn slots(&self) -> Result<SlotTable, RaucError> {
        let raw = self
            .call("GetSlotStatus", self.rauc.get_slot_status())
            .await?;
        Ok(SlotTable::new(
            &self.options.slot_class,
            raw.iter().map(RaucSlot::from_raw).collect(),
        ))
    }

    async fn booted_in(&self, table: &SlotTable) -> Result<Slot, RaucError> {
        let boot_slot = self.call("BootSlot", self.rauc.boot_slot()).await?;
        table.booted(&boot_slot)
    }

    /// The slot running now.
    pub async fn booted(&self) -> Result<Slot, RaucError> {
        let table = self.slots().await?;
        self.booted_in(&table).await
    }

    async fn primary_in(&self, table: &SlotTable) -> Result<Slot, RaucError> {
        let name = self.call("GetPrimary", self.rauc.get_primary()).await?;
        table.by_name(&name)
    }

    /// The slot the bootloader boots next.
    pub async fn primary(&self) -> Result<Slot, RaucError> {
        let table = self.slots().await?;
        self.primary_in(&table).await
    }

    /// RAUC's `compatible` string of this station.
    pub async fn compatible(&self) -> Result<String, RaucError> {
        self.call("Compatible", self.rauc.compatible()).await
    }

    /// Everything `fleet status` shows about RAUC, read in one go.
    pub async fn status(&self) -> Result<RaucStatus, RaucError> {
        let slots = self.slots().await?;
        Ok(RaucStatus {
            compatible: self.compatible().await?,
            operation: self.call("Operation", self.rauc.operation()).await?,
            last_error: clip(
                &self.call("LastError", self.rauc.last_error()).await?,
                self.options.limits.max_text_len,
            ),
            booted: self.booted_in(&slots).await?,
            primary: self.primary_in(&slots).await?,
            slots,
        })
    }

    /// Marks `slot` good, bad or active through RAUC (which calls the bootloader backend).
    pub async fn mark(&self, state: MarkState, slot: Slot) -> Result<Marked, RaucError> {
        let table = self.slots().await?;
        let name = table.get(slot)?.name.clone();
        let limit = self.options.limits.call_timeout;
        let answer = tokio::time::timeout(limit, self.rauc.mark(state.as_str(), &name)).await;
        let (marked_name, message) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(source)) if names_missing_service(&source) => {
                return Err(RaucError::NotRunning { service: SERVICE });
            }
            Ok(Err(source)) if busy_reason(&source).is_some() => {
                return Err(RaucError::Busy {
                    method: "Mark",
                    reason: busy_reason(&source).unwrap_or_default(),
                });
            }
            Ok(Err(source)) => {
                return Err(RaucError::Mark {
                    slot: name,
                    state: state.as_str(),
                    source: Box::new(source),
                });
            }
            Err(_) => {
                return Err(RaucError::CallTimedOut {
                    method: "Mark",
                    seconds: limit.as_secs(),
                });
            }
        };
        info!(slot = %slot, rauc_slot = %marked_name, state = state.as_str(), "slot marked");
        Ok(Marked {
            slot: table.by_name(&marked_name).unwrap_or(slot),
            message,
        })
    }

    /// Installs a bundle: see [`Installer::install`].
    pub async fn install_bundle(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> Result<Installed, RaucError> {
        let bundle = request.bundle;
        let source = bundle_source(bundle)?;
        // A method call first: on a station RAUC may be D-Bus activated, and only a call to
        // its name starts it (asking the bus for the owner does not).
        let table = self.slots().await?;
        let owner = self.owner().await?;
        // The slot comes with the request (the update engine chose it); RAUC writes the
        // inactive slot, so anything else is refused before RAUC is asked.
        let booted = self.booted_in(&table).await?;
        let target = request.slot;
        if target != booted.other() {
            return Err(RaucError::WrongSlot {
                bundle: bundle.to_owned(),
                requested: target,
                booted,
                inactive: booted.other(),
            });
        }
        let target_name = table.get(target)?.name.clone();
        info!(bundle = %bundle.display(), transaction = request.transaction, target = %target,
            rauc_slot = %target_name, rauc = %owner, "install starting");

        // Listen before asking, so no signal is missed; one queue keeps their order.
        let mut stream = MessageStream::from(&self.conn);
        let rules = watch_rules(&owner)?;
        let outcome = async {
            for rule in &rules {
                self.call("AddMatch", async {
                    self.bus
                        .add_match_rule(rule.clone())
                        .await
                        .map_err(zbus::Error::from)
                })
                .await?;
            }
            // RAUC may have restarted between the lookup and the match rules; from here on an
            // owner change reaches the stream. The install request goes to this owner only,
            // never to a successor that would not know about it.
            let now = self.owner().await?;
            if now != owner {
                return Err(RaucError::Restarted {
                    bundle: bundle.to_owned(),
                    transaction: request.transaction.to_owned(),
                    before: owner.clone(),
                    after: now,
                });
            }
            self.start(request, source, &owner).await?;
            self.follow(&mut stream, request, &owner, progress).await
        }
        .await;
        drop(stream);
        for rule in rules {
            if let Err(e) = self.bus.remove_match_rule(rule).await {
                debug!(error = %e, "unable to remove match rule");
            }
        }
        let (code, seen_error) = outcome?;

        if code != 0 {
            let reason = match seen_error.filter(|e| !e.is_empty()) {
                Some(reason) => reason,
                None => self
                    .call("LastError", self.rauc.last_error())
                    .await
                    .unwrap_or_else(|e| {
                        format!("rauc exit code {code}; LastError unreadable: {e}")
                    }),
            };
            let reason = clip(&reason, self.options.limits.max_text_len);
            warn!(bundle = %bundle.display(), transaction = request.transaction, code, reason = %reason, "rauc refused the bundle");
            return Err(RaucError::Refused {
                bundle: bundle.to_owned(),
                reason,
            });
        }

        let table = self.slots().await?;
        let written = table.get(target)?;
        let primary = self.call("GetPrimary", self.rauc.get_primary()).await?;
        if primary != written.name {
            return Err(RaucError::NotArmed {
                bundle: bundle.to_owned(),
                primary,
                expected: written.name.clone(),
            });
        }
        let version = match written.version() {
            Ok(Some(version)) => version,
            Ok(None) | Err(_) => {
                let error = written
                    .version()
                    .err()
                    .unwrap_or_else(|| RaucError::UnknownSlot {
                        what: format!("version of rauc slot {}", written.name),
                        detail: "rauc recorded no bundle.version after the install".to_owned(),
                    });
                // The slot is armed but we cannot say what it holds. Disarming it is not this
                // adapter's call: the error names the armed slot and the update engine gives
                // it up through the boot flow.
                return Err(RaucError::ArmedUnknown {
                    slot: target,
                    source: Box::new(error),
                });
            }
        };
        info!(bundle = %bundle.display(), transaction = request.transaction, slot = %target,
            version = %version, "install finished");
        Ok(Installed {
            slot: target,
            version,
        })
    }

    /// Asks RAUC to start the install, dropping arguments this RAUC does not know where that is
    /// allowed.
    async fn start(
        &self,
        request: InstallRequest<'_>,
        source: &str,
        owner: &str,
    ) -> Result<(), RaucError> {
        let to_owner = |source| RaucError::Call {
            method: "InstallBundle",
            source: Box::new(source),
        };
        let rauc = RaucInstallerProxy::builder(&self.conn)
            .destination(owner.to_owned())
            .map_err(to_owner)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(to_owner)?;
        let mut send_transaction = true;
        let mut send_hash = request.manifest_hash.is_some();
        // One retry per optional argument at most.
        for _ in 0..3 {
            let mut args: HashMap<&str, Value<'_>> = HashMap::new();
            if send_transaction {
                args.insert("transaction-id", Value::from(request.transaction));
            }
            if let (true, Some(hash)) = (send_hash, request.manifest_hash) {
                args.insert("require-manifest-hash", Value::from(hash));
            }
            let error = match self
                .call("InstallBundle", rauc.install_bundle(source, args))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let refusal = match &error {
                RaucError::Call { source, .. } => match &**source {
                    zbus::Error::MethodError(_, Some(text), _) => classify_start_error(text),
                    _ => StartRefusal::Other,
                },
                _ => StartRefusal::Other,
            };
            match refusal {
                StartRefusal::Unsupported(key) if key == "transaction-id" && send_transaction => {
                    debug!("rauc does not take transaction-id; installing without it");
                    send_transaction = false;
                }
                StartRefusal::Unsupported(key) if key == "require-manifest-hash" && send_hash => {
                    match self.options.manifest_hash {
                        ManifestHashCheck::Enforce => {
                            return Err(RaucError::ManifestHashUnsupported {
                                bundle: request.bundle.to_owned(),
                            });
                        }
                        ManifestHashCheck::WhereSupported => {
                            warn!(bundle = %request.bundle.display(),
                                "rauc cannot check the manifest hash; relying on the offer's bundle digest");
                            send_hash = false;
                        }
                    }
                }
                StartRefusal::Unsupported(_) | StartRefusal::Other => return Err(error),
            }
        }
        Err(RaucError::Refused {
            bundle: request.bundle.to_owned(),
            reason: "rauc kept refusing the install arguments".to_owned(),
        })
    }

    /// Follows the install until `Completed`, passing progress on as it arrives. Returns RAUC's
    /// result code and the last `LastError` seen.
    async fn follow(
        &self,
        stream: &mut MessageStream,
        request: InstallRequest<'_>,
        owner: &str,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> Result<(i32, Option<String>), RaucError> {
        let limits = self.options.limits;
        let deadline = tokio::time::Instant::now() + limits.install_timeout;
        let mut last_error = None;
        loop {
            let message = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(RaucError::InstallTimedOut {
                        bundle: request.bundle.to_owned(),
                        seconds: limits.install_timeout.as_secs(),
                    });
                }
                Ok(None) => {
                    return Err(RaucError::ConnectionLost {
                        bundle: request.bundle.to_owned(),
                    });
                }
                Ok(Some(Err(zbus::Error::InputOutput(e)))) => {
                    warn!(error = %e, "d-bus connection failed during the install");
                    return Err(RaucError::ConnectionLost {
                        bundle: request.bundle.to_owned(),
                    });
                }
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "unreadable d-bus message skipped");
                    continue;
                }
                Ok(Some(Ok(message))) => message,
            };
            match InstallEvent::of(&message, owner, limits.max_text_len) {
                InstallEvent::Progress(p) => {
                    debug!(percent = p.percent, message = %p.message, "install progress");
                    progress(p);
                }
                InstallEvent::LastError(e) => last_error = Some(e),
                InstallEvent::Completed(code) => return Ok((code, last_error)),
                InstallEvent::OwnerChanged { new_owner } => {
                    warn!(transaction = request.transaction, before = owner, after = %new_owner,
                        "rauc went away during the install");
                    return Err(RaucError::Restarted {
                        bundle: request.bundle.to_owned(),
                        transaction: request.transaction.to_owned(),
                        before: owner.to_owned(),
                        after: new_owner,
                    });
                }
                InstallEvent::Unrelated => {}
            }
        }
    }
}

impl Installer for RaucClient {
    type Error = RaucError;

    fn install(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> impl Future<Output = Result<Installed, Self::Error>> + Send {
        self.install_bundle(request, progress)
    }
}

fn bundle_source(bundle: &Path) -> Result<&str, RaucError> {
    match bundle.to_str() {
        Some(text) if bundle.is_absolute() => Ok(text),
        _ => Err(RaucError::BundlePath {
            bundle: bundle.to_owned(),
        }),
    }
}

fn names_missing_service(error: &zbus::Error) -> bool {
    match error {
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
        ),
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    }
}

/// The signals an install is followed by: everything RAUC's current owner sends on its object,
/// and the bus telling that RAUC's name changed hands.
fn watch_rules(owner: &str) -> Result<[MatchRule<'static>; 2], RaucError> {
    let invalid = |source| RaucError::Call {
        method: "AddMatch",
        source: Box::new(source),
    };
    let from_rauc = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(owner.to_owned())
        .map_err(invalid)?
        .path(PATH)
        .map_err(invalid)?
        .build();
    let owner_changes = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .map_err(invalid)?
        .interface("org.freedesktop.DBus")
        .map_err(invalid)?
        .member("NameOwnerChanged")
        .map_err(invalid)?
        .arg(0, SERVICE)
        .map_err(invalid)?
        .build();
    Ok([from_rauc, owner_changes])
}

/// Why RAUC refused to start an install (beyond being busy, which every call can be).
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartRefusal {
    /// RAUC does not know this argument (older RAUC).
    Unsupported(String),
    Other,
}

fn classify_start_error(text: &str) -> StartRefusal {
    match text.trim().strip_prefix("Unsupported key: ") {
        Some(key) => StartRefusal::Unsupported(key.trim().to_owned()),
        None => StartRefusal::Other,
    }
}

/// RAUC's text when a method was refused because another operation (an install) runs: rauc
/// answers "already processing a different method" (capitalised for `InstallBundle`).
fn busy_reason(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(_, Some(text), _)
            if text.to_ascii_lowercase().contains("already processing") =>
        {
            Some(text.trim().to_owned())
        }
        _ => None,
    }
}

/// One D-Bus message, as far as a running install cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InstallEvent {
    Progress(InstallProgress),
    LastError(String),
    Completed(i32),
    OwnerChanged { new_owner: String },
    Unrelated,
}

impl InstallEvent {
    fn of(message: &Message, owner: &str, max_text: usize) -> InstallEvent {
        let header = message.header();
        if header.message_type() != MessageType::Signal {
            return InstallEvent::Unrelated;
        }
        let sender = header.sender().map(|s| s.as_str()).unwrap_or_default();
        let interface = header.interface().map(|i| i.as_str()).unwrap_or_default();
        let member = header.member().map(|m| m.as_str()).unwrap_or_default();
        match (sender, interface, member) {
            ("org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged") => {
                match message.body().deserialize::<(String, String, String)>() {
                    Ok((name, old, new)) if name == SERVICE && old == owner => {
                        InstallEvent::OwnerChanged { new_owner: new }
                    }
                    _ => InstallEvent::Unrelated,
                }
            }
            (s, INTERFACE, "Completed") if s == owner => {
                match message.body().deserialize::<i32>() {
                    Ok(code) => InstallEvent::Completed(code),
                    Err(_) => InstallEvent::Unrelated,
                }
            }
            (s, "org.freedesktop.DBus.Properties", "PropertiesChanged") if s == owner => {
                let body = message
                    .body()
                    .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>();
                match body {
                    Ok((iface, changed, _)) if iface == INTERFACE => {
                        if let Some(p) = changed
                            .get("Progress")
                            .and_then(|v| progress_of(v, max_text))
                        {
                            InstallEvent::Progress(p)
                        } else if let Some(Value::Str(e)) = changed.get("LastError").map(|v| &**v) {
                            InstallEvent::LastError(clip(e.as_str(), max_text))
                        } else {
                            InstallEvent::Unrelated
                        }
                    }
                    _ => InstallEvent::Unrelated,
                }
            }
            _ => InstallEvent::Unrelated,
        }
    }
}

/// RAUC's `Progress` value `(percentage, message, depth)`.
fn progress_of(value: &Value<'_>, max_text: usize) -> Option<InstallProgress> {
    let Value::Structure(s) = value else {
        return None;
    };
    match s.fields() {
        [Value::I32(percent), Value::Str(message), ..] => Some(InstallProgress {
            percent: u8::try_from((*percent).clamp(0, 100)).unwrap_or(100),
            message: clip(message.as_str(), max_text),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties_changed(sender: &str, key: &str, value: Value<'_>) -> Message {
        let mut changed: HashMap<&str, Value<'_>> = HashMap::new();
        changed.insert(key, value);
        Message::signal(PATH, "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .expect("valid names")
            .sender(sender)
            .expect("valid sender")
            .build(&(INTERFACE, changed, Vec::<String>::new()))
            .expect("serialisable body")
    }

    #[test]
    fn progress_from_rauc_becomes_install_progress() {
        let m = properties_changed(
            ":1.7",
            "Progress",
            Value::from((40i32, "Checking slot rootfs.1", 2i32)),
        );
        assert_eq!(
            InstallEvent::of(&m, ":1.7", 100),
            InstallEvent::Progress(InstallProgress {
                percent: 40,
                message: "Checking slot rootfs.1".to_owned()
            })
        );
    }

    #[test]
    fn progress_outside_0_to_100_is_clamped() {
        let m = properties_changed(":1.7", "Progress", Value::from((250i32, "x", 1i32)));
        assert!(matches!(
            InstallEvent::of(&m, ":1.7", 100),
            InstallEvent::Progress(InstallProgress { percent: 100, .. })
        ));
    }

    #[test]
    fn signals_from_another_sender_are_ignored() {
        let m = properties_changed(":1.9", "Progress", Value::from((40i32, "x", 1i32)));
        assert_eq!(InstallEvent::of(&m, ":1.7", 100), InstallEvent::Unrelated);
    }

    #[test]
    fn last_error_is_clipped() {
        let m = properties_changed(":1.7", "LastError", Value::from("abcdef"));
        assert_eq!(
            InstallEvent::of(&m, ":1.7", 3),
            InstallEvent::LastError("abc…".to_owned())
        );
    }

    #[test]
    fn completed_carries_the_result_code() {
        let m = Message::signal(PATH, INTERFACE, "Completed")
            .expect("valid names")
            .sender(":1.7")
            .expect("valid sender")
            .build(&(1i32,))
            .expect("serialisable body");
        assert_eq!(
            InstallEvent::of(&m, ":1.7", 100),
            InstallEvent::Completed(1)
        );
    }

    #[test]
    fn rauc_losing_its_name_is_an_owner_change() {
        let m = Message::signal(
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameOwnerChanged",
        )
        .expect("valid names")
        .sender("org.freedesktop.DBus")
        .expect("valid sender")
        .build(&(SERVICE, ":1.7", ""))
        .expect("serialisable body");
        assert_eq!(
            InstallEvent::of(&m, ":1.7", 100),
            InstallEvent::OwnerChanged {
                new_owner: String::new()
            }
        );
        assert_eq!(InstallEvent::of(&m, ":1.8", 100), InstallEvent::Unrelated);
    }

    #[test]
    fn start_errors_are_told_apart() {
        assert_eq!(
            classify_start_error("Unsupported key: transaction-id"),
            StartRefusal::Unsupported("transaction-id".to_owned())
        );
        assert_eq!(classify_start_error("No such file"), StartRefusal::Other);
    }

    fn method_error(name: &str, text: &str) -> zbus::Error {
        let reply_to = Message::method_call(PATH, "InstallBundle")
            .expect("valid path and member")
            .build(&())
            .expect("empty body");
        zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from(name).expect("valid error name"),
            Some(text.to_owned()),
            reply_to,
        )
    }

    #[test]
    fn rauc_being_busy_is_told_apart_from_other_method_errors() {
        let gio = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30";
        let busy = method_error(gio, "already processing a different method");
        assert!(busy_reason(&busy).is_some());
        let busy = method_error(gio, "Already processing a different method");
        assert!(busy_reason(&busy).is_some());
        let other = method_error(gio, "Unsupported key: transaction-id");
        assert!(busy_reason(&other).is_none());
    }

    #[test]
    fn a_missing_rauc_is_recognised_from_the_bus_error() {
        let gone = method_error("org.freedesktop.DBus.Error.ServiceUnknown", "no such name");
        assert!(names_missing_service(&gone));
        let gio = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30";
        assert!(!names_missing_service(&method_error(gio, "refused")));
    }

    #[test]
    fn relative_bundle_paths_are_refused() {
        assert!(bundle_source(Path::new("b.raucb")).is_err());
        assert_eq!(
            bundle_source(Path::new("/data/b.raucb")).ok(),
            Some("/data/b.raucb")
        );
    }
}
