//! Small words the operator's tables share (status, health, the exporter): ages and the
//! kebab-case names of enum values. A leaf module, so the tables never import each other.
use serde::Serialize;

/// The kebab-case name of a serde enum value (phase names, slots).
pub fn name_of<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// `3m`, `2h`, `4d`: an age in its largest whole unit.
#[must_use]
pub fn ago(s: i64) -> String {
    match s.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
