//! fleet-recorderd: gap-free, power-loss-safe recording from ALSA.
//!
//! Pure parts (no I/O, no clock): `audio` (per-segment figures), `civil`, `guano`, `segment`, `schedule`, and the decision
//! functions in `capture` (`decide_reopen`) and `metrics` (`is_healthy`). Shells: `capture`
//! (alsa-lib), `wav` and `recovery` (files), `recording` (threads), `config` (TOML) and the binary.

pub mod audio;
pub mod capture;
pub mod civil;
pub mod config;
pub mod guano;
pub mod metrics;
pub mod recording;
pub mod recovery;
pub mod schedule;
pub mod segment;
pub mod wav;
