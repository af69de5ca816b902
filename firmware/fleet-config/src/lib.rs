//! Layered configuration of the station daemons (ADR 0008).
//!
//! Every daemon reads up to three layers of the same TOML shape:
//!
//! 1. **image defaults**, `/etc/fleet/<daemon>.toml`: shipped read-only in the image, the same on
//!    every station (`--config`);
//! 2. **station settings**, `/data/fleet/identity/<daemon>.toml`: written by first-boot
//!    provisioning, this station's own (`--station-config`). Optional: a station that is not
//!    provisioned yet has none.
//! 3. **pushed settings**, `/data/fleet/config/<daemon>.toml`: what signed configuration pushes
//!    set (ADR 0011), written only by fleet-updated's applier (`--pushed-config`). Optional.
//!
//! [`Layers`] names the first two, [`Stack`] all three; both are a [`Source`], and every loader
//! here takes any source. A later layer wins: tables are merged key by key (recursively), every other value (a
//! string, a number, an array, an array of tables such as `[[devices]]`) replaces the image's
//! value as a whole. The daemon's own parser then validates the merged document, so
//! `--check-config` checks exactly what the daemon would run with.
//!
//! A daemon names the settings it cannot run without ([`Need`]). While one is missing the
//! configuration is *incomplete*, not invalid: `--check-config` exits [`EXIT_INCOMPLETE`], and the
//! daemon starts, tells systemd it is ready with a status line naming what is missing, keeps
//! the watchdog fed and reads its layers again until they are complete ([`wait_until_complete`]).
//! A freshly flashed station therefore never crash-loops.
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

/// Exit code of an invalid configuration: restarting cannot fix it (`RestartPreventExitStatus=2`).
pub const EXIT_INVALID: u8 = 2;
/// Exit code of `--check-config` on a configuration that is valid so far but lacks station
/// settings: the daemon would start and wait for them.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Every bound of this crate, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest layer file read.
    pub max_layer_bytes: u64,
    /// How often a waiting daemon reads its layers again.
    pub recheck: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_layer_bytes: 256 << 10,
            recheck: Duration::from_secs(30),
        }
    }
}

/// Why the layers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("unable to read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to read config {path}: it is {len} bytes, more than {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("unable to parse config {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

/// Where a daemon's two layers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// Image defaults: must exist.
    pub image: PathBuf,
    /// Station settings: may be absent (an unprovisioned station).
    pub station: Option<PathBuf>,
}

/// A daemon's three layers (ADR 0011): image < station < pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// Image defaults and station settings.
    pub layers: Layers,
    /// Pushed settings: may be absent (nothing was ever pushed).
    pub pushed: Option<PathBuf>,
}

/// Where a daemon's layers come from: [`Layers`] (two) or [`Stack`] (three).
pub trait Source {
    /// Reads every layer present and merges them, the later over the earlier.
    fn read(&self, limits: &Limits) -> Result<Merged, LayerError>;
    /// The layer files, for messages: `/etc/fleet/x.toml + /data/fleet/identity/x.toml`.
    fn names(&self) -> String;
}

impl Source for Layers {
    fn read(&self, limits: &Limits) -> Result<Merged, LayerError> {
        Layers::read(self, limits)
    }

    fn names(&self) -> String {
        format!(
            "{}{}",
            self.image.display(),
            self.station
                .as_ref()
                .map(|s| format!(" + {}", s.display()))
                .unwrap_or_default()
        )
    }
}

impl Stack {
    /// The three layers at their paths.
    #[must_use]
    pub fn new(
        image: impl Into<PathBuf>,
        station: Option<PathBuf>,
        pushed: Option<PathBuf>,
    ) -> Self {
        Self {
            layers: Layers {
                image: image.into(),
                station,
            },
            pushed,
        }
    }
}

impl Source for Stack {
    /// Reads the two lower layers, then lays the pushed layer over them when it exists.
    fn read(&self, limits: &Limits) -> Result<Merged, LayerError> {
        let mut merged = self.layers.read(limits)?;
        if let Some(pushed) = &self.pushed
            && let Some(over) = read_table(pushed, limits)?
        {
            merge(&mut merged.table, over);
            merged.origin = PathBuf::from(format!(
                "{} + {}",
                merged.origin.display(),
                pushed.display()
            ));
            merged.text = toml::to_string(&merged.table).map_err(|e| LayerError::Parse {
                path: merged.origin.clone(),
                detail: e.to_string(),
            })?;
        }
        Ok(merged)
    }

    fn names(&self) -> String {
        format!(
            "{}{}",
            self.layers.names(),
            self.pushed
                .as_ref()
                .map(|s| format!(" + {}", s.display()))
                .unwrap_or_default()
        )
    }
}

/// The merged configuration, ready for a daemon's parser.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub table: Table,
    /// The merged document as TOML text (what the daemon's parser reads).
    pub text: String,
    /// Names the layers in messages: `/etc/fleet/x.toml + /data/fleet/identity/x.toml`.
    pub origin: PathBuf,
    /// The station layer existed and was merged.
    pub station_present: bool,
}

/// A setting a daemon cannot run without: any one of the listed keys (dotted paths such as
/// `mqtt.host`). A key ending in `-file` counts only when the file it names exists.
///
/// The second field is a *probe*: TOML that meets the need with a harmless value. While a need
/// is missing the daemon's parser still checks everything else, with the probe in the need's
/// place: an unknown key or a wrong value elsewhere is invalid, not merely incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need(pub &'static [&'static str], pub &'static str);

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" or "))
    }
}

/// Overlays `over` on `base`: tables merge key by key, anything else in `over` replaces.
pub fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn lookup<'a>(table: &'a Table, dotted: &str) -> Option<&'a Value> {
    let mut parts = dotted.split('.');
    let first = parts.next()?;
    let mut cur = table.get(first)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

fn remove(table: &mut Table, dotted: &str) {
    match dotted.split_once('.') {
        None => {
            table.remove(dotted);
        }
        Some((first, rest)) => {
            if let Some(Value::Table(t)) = table.get_mut(first) {
                remove(t, rest);
            }
        }
    }
}

/// The needs of `needs` that `table` does not meet.
fn unmet<'a>(table: &Table, needs: &'a [Need]) -> Vec<&'a Need> {
    needs
        .iter()
        .filter(|n| !missing(table, std::slice::from_ref(*n)).is_empty())
        .collect()
}

/// What is missing from `table` for `needs`, one sentence per need (empty when complete).
#[must_use]
pub fn missing(table: &Table, needs: &[Need]) -> Vec<String> {
    let mut out = Vec::new();
    for need in needs {
        let mut absent_files = Vec::new();
        let met = need.0.iter().any(|key| match lookup(table, key) {
            None => false,
            Some(Value::String(p)) if key.ends_with("-file") => {
                let exists = Path::new(p).exists();
                if !exists {
                    absent_files.push(format!("{key} = {p:?} does not exist yet"));
                }
                exists
            }
            Some(_) => true,
        });
        if !met {
            if absent_files.is_empty() {
                out.push(format!("{need} is not set"));
            } else {
                out.push(absent_files.join(", "));
            }
        }
    }
    out
}

fn read_table(path: &Path, limits: &Limits) -> Result<Option<Table>, LayerError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayerError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if meta.len() > limits.max_layer_bytes {
        return Err(LayerError::TooLarge {
            path: path.to_owned(),
            len: meta.len(),
            max: limits.max_layer_bytes,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str::<Table>(&text)
        .map(Some)
        .map_err(|e| LayerError::Parse {
            path: path.to_owned(),
            detail: e.message().to_owned(),
        })
}

impl Layers {
    /// Image defaults only.
    #[must_use]
    pub fn image_only(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            station: None,
        }
    }

    /// Reads both layers and merges them. The image layer must exist; a missing station layer
    /// is an unprovisioned station, not an error.
    pub fn read(&self, limits: &Limits) -> Result<Merged, LayerError> {
        let mut table = read_table(&self.image, limits)?.ok_or_else(|| LayerError::Read {
            path: self.image.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })?;
        let mut origin = self.image.display().to_string();
        let mut station_present = false;
        if let Some(station) = &self.station
            && let Some(over) = read_table(station, limits)?
        {
            merge(&mut table, over);
            origin = format!("{origin} + {}", station.display());
            station_present = true;
        }
        let text = toml::to_string(&table).map_err(|e| LayerError::Parse {
            path: PathBuf::from(&origin),
            detail: e.to_string(),
        })?;
        Ok(Merged {
            table,
            text,
            origin: PathBuf::from(origin),
            station_present,
        })
    }
}

/// What a waiting daemon tells the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Started, waiting: the status line names what is missing.
    Waiting(String),
    /// Still alive (a watchdog ping).
    Alive,
}

/// How a daemon's configuration came out.
#[derive(Debug)]
pub enum Outcome<T> {
    Ready(T),
    /// The layers cannot be read or the daemon's parser refused them: exit [`EXIT_INVALID`].
    Invalid(String),
    /// `--check-config` on an incomplete configuration: exit [`EXIT_INCOMPLETE`].
    Incomplete(Vec<String>),
}

/// Reads the layers once: `Ready` when complete and valid.
pub fn load_once<S: Source + ?Sized, T, E: fmt::Display>(
    layers: &S,
    needs: &[Need],
    limits: &Limits,
    parse: impl Fn(&Merged) -> Result<T, E>,
) -> Outcome<T> {
    let merged = match layers.read(limits) {
        Ok(m) => m,
        Err(e) => return Outcome::Invalid(e.to_string()),
    };
    let gaps = missing(&merged.table, needs);
    if !gaps.is_empty() {
        // Everything but the missing needs must already be right: check it with each unmet
        // need's probe in its place.
        let mut probe = merged.table.clone();
        for need in unmet(&merged.table, needs) {
            for key in need.0 {
                remove(&mut probe, key);
            }
            match toml::from_str::<Table>(need.1) {
                Ok(t) => merge(&mut probe, t),
                Err(e) => return Outcome::Invalid(format!("unusable probe for {need}: {e}")),
            }
        }
        let text = match toml::to_string(&probe) {
            Ok(t) => t,
            Err(e) => return Outcome::Invalid(e.to_string()),
        };
        let probed = Merged {
            table: probe,
            text,
            origin: merged.origin.clone(),
            station_present: merged.station_present,
        };
        return match parse(&probed) {
            Ok(_) => Outcome::Incomplete(gaps),
            Err(e) => Outcome::Invalid(e.to_string()),
        };
    }
    match parse(&merged) {
        Ok(c) => Outcome::Ready(c),
        Err(e) => Outcome::Invalid(e.to_string()),
    }
}

/// Reads the layers until they are complete, then validates them. While incomplete it reports
/// [`Notice::Waiting`] once per change of what is missing and [`Notice::Alive`] at every `sleep`
/// step; it reads the layers again every `limits.recheck`. `step` is how long each sleep is (half
/// the watchdog interval, at most `limits.recheck`). Returns `Ready` or `Invalid`, never
/// `Incomplete`.
pub fn wait_until_complete<S: Source + ?Sized, T, E: fmt::Display>(
    layers: &S,
    needs: &[Need],
    limits: &Limits,
    step: Duration,
    parse: impl Fn(&Merged) -> Result<T, E>,
    mut sleep: impl FnMut(Duration),
    mut notify: impl FnMut(Notice),
) -> Outcome<T> {
    let step = step.min(limits.recheck).max(Duration::from_millis(1));
    let mut last: Option<Vec<String>> = None;
    loop {
        match load_once(layers, needs, limits, &parse) {
            Outcome::Incomplete(gaps) => {
                if last.as_ref() != Some(&gaps) {
                    notify(Notice::Waiting(format!(
                        "waiting for station settings: {}",
                        gaps.join("; ")
                    )));
                    last = Some(gaps);
                }
                let mut slept = Duration::ZERO;
                while slept < limits.recheck {
                    sleep(step);
                    slept += step;
                    notify(Notice::Alive);
                }
            }
            done => return done,
        }
    }
}

/// The daemon side of [`wait_until_complete`] under systemd: `READY=1` with a `STATUS=` line,
/// watchdog pings at half the unit's `WatchdogSec`, real sleeps. With `check_only` nothing waits:
/// an incomplete configuration is reported and returned as [`Outcome::Incomplete`].
pub fn load_for_daemon<S: Source + ?Sized, T, E: fmt::Display>(
    layers: &S,
    needs: &[Need],
    check_only: bool,
    parse: impl Fn(&Merged) -> Result<T, E>,
) -> Outcome<T> {
    let limits = Limits::default();
    if check_only {
        return load_once(layers, needs, &limits, parse);
    }
    let mut usec = 0;
    let step = if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Duration::from_micros(usec / 2)
    } else {
        Duration::from_secs(10)
    };
    let out = wait_until_complete(
        layers,
        needs,
        &limits,
        step,
        parse,
        std::thread::sleep,
        |n| match n {
            Notice::Waiting(status) => {
                tracing::warn!(status = %status, config = %layers.names(), "configuration incomplete: waiting");
                let _ = sd_notify::notify(
                    false,
                    &[
                        sd_notify::NotifyState::Ready,
                        sd_notify::NotifyState::Status(&status),
                    ],
                );
            }
            Notice::Alive => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        },
    );
    if matches!(out, Outcome::Ready(_)) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status("configured")]);
    }
    out
}

impl<T> Outcome<T> {
    /// The configuration, or the exit code and message for `main` (`origin` names the layers).
    pub fn finish<S: Source + ?Sized>(self, origin: &S) -> Result<T, (u8, String)> {
        match self {
            Outcome::Ready(c) => Ok(c),
            Outcome::Invalid(msg) => Err((EXIT_INVALID, msg)),
            Outcome::Incomplete(gaps) => Err((
                EXIT_INCOMPLETE,
                format!(
                    "{}: incomplete, the daemon would wait for station settings:\n  {}",
                    origin.names(),
                    gaps.join("\n  ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("test toml")
    }

    #[test]
    fn station_values_replace_image_values_and_tables_merge_key_by_key() {
        let mut base =
            table("a = 1\nlist = [1, 2]\n[t]\nx = 1\ny = 2\n[[devices]]\nid = \"image\"\n");
        merge(
            &mut base,
            table("list = [3]\n[t]\ny = 20\nz = 30\n[[devices]]\nid = \"station\"\n"),
        );
        assert_eq!(
            base,
            table("a = 1\nlist = [3]\n[t]\nx = 1\ny = 20\nz = 30\n[[devices]]\nid = \"station\"\n")
        );
    }

    #[test]
    fn a_missing_station_layer_is_an_unprovisioned_station_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("x.toml");
        std::fs::write(&image, "a = 1\n").expect("write");
        let layers = Layers {
            image: image.clone(),
            station: Some(dir.path().join("absent.toml")),
        };
        let m = layers.read(&Limits::default()).expect("reads");
        assert!(!m.station_present);
        assert_eq!(m.origin, image);
        let missing_image = Layers::image_only(dir.path().join("nope.toml"));
        assert!(matches!(
            missing_image.read(&Limits::default()),
            Err(LayerError::Read { .. })
        ));
    }

    #[test]
    fn the_pushed_layer_wins_over_the_station_layer_which_wins_over_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image.toml");
        let station = dir.path().join("station.toml");
        let pushed = dir.path().join("pushed.toml");
        std::fs::write(&image, "a = 1\nb = 1\nc = 1\n[t]\nx = 1\ny = 1\n").expect("write");
        std::fs::write(&station, "b = 2\nc = 2\n[t]\nx = 2\n").expect("write");
        std::fs::write(&pushed, "c = 3\n[t]\ny = 3\n").expect("write");
        let stack = Stack::new(&image, Some(station.clone()), Some(pushed.clone()));
        let m = Source::read(&stack, &Limits::default()).expect("reads");
        assert_eq!(m.table, table("a = 1\nb = 2\nc = 3\n[t]\nx = 2\ny = 3\n"));
        assert_eq!(toml::from_str::<Table>(&m.text).expect("text"), m.table);
        assert!(
            m.origin.display().to_string().ends_with("pushed.toml"),
            "{}",
            m.origin.display()
        );
        // Nothing pushed yet: the two lower layers, unchanged.
        std::fs::remove_file(&pushed).expect("rm");
        let m = Source::read(&stack, &Limits::default()).expect("reads");
        assert_eq!(m.table, table("a = 1\nb = 2\nc = 2\n[t]\nx = 2\ny = 1\n"));
        assert_eq!(
            stack.names(),
            format!(
                "{} + {} + {}",
                image.display(),
                station.display(),
                pushed.display()
            )
        );
    }

    #[test]
    fn a_broken_pushed_layer_is_invalid_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image.toml");
        let pushed = dir.path().join("pushed.toml");
        std::fs::write(&image, "a = 1\n").expect("write");
        std::fs::write(&pushed, "a = \n").expect("write");
        let stack = Stack::new(&image, None, Some(pushed.clone()));
        let out = load_once(
            &stack,
            &[],
            &Limits::default(),
            |_m: &Merged| -> Result<(), String> { Ok(()) },
        );
        assert!(
            matches!(out, Outcome::Invalid(ref m) if m.contains("pushed.toml")),
            "{out:?}"
        );
    }

    #[test]
    fn a_broken_layer_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("x.toml");
        let station = dir.path().join("s.toml");
        std::fs::write(&image, "a = 1\n").expect("write");
        std::fs::write(&station, "a = \n").expect("write");
        let err = Layers {
            image,
            station: Some(station.clone()),
        }
        .read(&Limits::default())
        .expect_err("broken");
        assert!(
            err.to_string().contains(&station.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_need_is_met_by_any_of_its_keys_and_a_file_key_only_by_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let present = dir.path().join("id");
        std::fs::write(&present, "stn-1").expect("write");
        let needs = [
            Need(&["id", "id-file"], "id = \"probe\""),
            Need(&["mqtt.host"], "[mqtt]\nhost = \"probe\""),
        ];
        let t = table(&format!(
            "id-file = \"{}\"\n[mqtt]\nhost = \"b\"\n",
            present.display()
        ));
        assert!(missing(&t, &needs).is_empty());
        let t = table("id-file = \"/nonexistent/id\"\n[mqtt]\nport = 1\n");
        let gaps = missing(&t, &needs);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert!(gaps[0].contains("/nonexistent/id"), "{gaps:?}");
        assert_eq!(gaps[1], "mqtt.host is not set");
    }

    #[test]
    fn a_waiting_daemon_stays_alive_until_its_station_layer_arrives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("x.toml");
        let station = dir.path().join("s.toml");
        std::fs::write(&image, "a = 1\n").expect("write");
        let layers = Layers {
            image,
            station: Some(station.clone()),
        };
        let limits = Limits {
            recheck: Duration::from_secs(30),
            ..Limits::default()
        };
        let mut sleeps = 0;
        let mut notices = Vec::new();
        let out = wait_until_complete(
            &layers,
            &[Need(&["id"], "id = \"probe\"")],
            &limits,
            Duration::from_secs(10),
            |m: &Merged| -> Result<String, String> {
                Ok(m.table["id"].as_str().unwrap_or_default().to_owned())
            },
            |d| {
                assert_eq!(d, Duration::from_secs(10));
                sleeps += 1;
                if sleeps == 4 {
                    std::fs::write(&station, "id = \"stn-1\"\n").expect("write");
                }
            },
            |n| notices.push(n),
        );
        assert!(
            matches!(out, Outcome::Ready(ref id) if id == "stn-1"),
            "{out:?}"
        );
        // Two rounds of three 10 s sleeps: one status line, six watchdog pings.
        assert_eq!(sleeps, 6);
        assert_eq!(
            notices[0],
            Notice::Waiting("waiting for station settings: id is not set".into())
        );
        assert_eq!(notices.iter().filter(|n| **n == Notice::Alive).count(), 6);
        assert_eq!(notices.len(), 7);
    }

    #[test]
    fn an_invalid_station_layer_ends_the_wait_as_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("x.toml");
        let station = dir.path().join("s.toml");
        std::fs::write(&image, "a = 1\n").expect("write");
        std::fs::write(&station, "id = 5\n").expect("write");
        let out = wait_until_complete(
            &Layers {
                image,
                station: Some(station),
            },
            &[Need(&["id"], "id = \"probe\"")],
            &Limits::default(),
            Duration::from_secs(10),
            |m: &Merged| match m.table["id"].as_str() {
                Some(s) => Ok(s.to_owned()),
                None => Err("id: must be a string"),
            },
            |_| panic!("a complete configuration must not wait"),
            |_| {},
        );
        assert!(matches!(out, Outcome::Invalid(ref m) if m.contains("id: must be")));
    }

    #[test]
    fn a_wrong_value_beside_a_missing_need_is_invalid_not_incomplete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("x.toml");
        std::fs::write(&image, "colour = 5\nid-file = \"/nonexistent\"\n").expect("write");
        let parse = |m: &Merged| -> Result<(), String> {
            if m.table.contains_key("colour") {
                return Err("unknown key colour".into());
            }
            match (m.table.get("id"), m.table.get("id-file")) {
                (Some(_), None) | (None, Some(_)) => Ok(()),
                _ => Err("give exactly one of id and id-file".into()),
            }
        };
        let needs = [Need(&["id", "id-file"], "id = \"probe\"")];
        let out = load_once(
            &Layers::image_only(&image),
            &needs,
            &Limits::default(),
            parse,
        );
        assert!(
            matches!(out, Outcome::Invalid(ref m) if m.contains("colour")),
            "{out:?}"
        );
        // Without the wrong key it is incomplete: the probe replaces the dangling id-file.
        std::fs::write(&image, "id-file = \"/nonexistent\"\n").expect("write");
        let out = load_once(
            &Layers::image_only(&image),
            &needs,
            &Limits::default(),
            parse,
        );
        assert!(matches!(out, Outcome::Incomplete(_)), "{out:?}");
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(|i| Value::Integer(i.into())),
            "[a-z]{0,4}".prop_map(Value::String),
            proptest::collection::vec(any::<bool>().prop_map(Value::Boolean), 0..3)
                .prop_map(Value::Array),
        ]
    }

    fn tables() -> impl Strategy<Value = Table> {
        leaf()
            .prop_recursive(3, 16, 4, |inner| {
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Table(m.into_iter().collect()))
            })
            .prop_map(|v| match v {
                Value::Table(t) => t,
                other => [("k".to_owned(), other)].into_iter().collect(),
            })
    }

    proptest! {
        /// Whatever the layers hold, every station value that is not a table is what the daemon
        /// sees, and every image key the station does not mention survives.
        #[test]
        fn the_station_layer_always_wins_and_never_drops_an_image_key(image in tables(), station in tables()) {
            let mut merged = image.clone();
            merge(&mut merged, station.clone());
            fn check(merged: &Table, image: &Table, station: &Table) -> Result<(), TestCaseError> {
                for (k, v) in station {
                    match (v, merged.get(k)) {
                        (Value::Table(s), Some(Value::Table(m))) => {
                            let empty = Table::new();
                            let i = image.get(k).and_then(Value::as_table).unwrap_or(&empty);
                            check(m, i, s)?;
                        }
                        (v, m) => prop_assert_eq!(Some(v), m),
                    }
                }
                for k in image.keys() {
                    prop_assert!(merged.contains_key(k));
                }
                Ok(())
            }
            check(&merged, &image, &station)?;
        }
    }
}
