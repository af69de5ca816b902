//! Fakes and harnesses shared by tests. A dev-dependency only: never linked into a daemon.
//!
//! - [`mosquitto::Mosquitto`]: a real mosquitto on a free loopback port, killed on drop.
pub mod mosquitto;

pub use mosquitto::Mosquitto;
