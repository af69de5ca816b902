//! `fleetctl`: the host side of fleet updates.
//!
//! Everything a command does lives here so that integration tests of other crates can call it:
//! [`keys`] (offer-signing key pair), [`publish`] (push and clear bundles, offers), [`status`]
//! (station table from retained state), [`watch`] (live progress), [`embedded`] (an in-process
//! rumqttd broker) and [`demo`]. The binary only parses arguments and prints.
pub mod clock;
pub mod config_push;
pub mod connection;
pub mod delta;
pub mod demo;
pub mod embedded;
pub mod exporter;
pub mod health;
pub mod keys;
pub mod logs;
pub mod pki;
pub mod provision;
pub mod publish;
pub mod rollout;
pub mod rollout_watch;
pub mod sim;
pub mod stage;
pub mod status;
pub mod target;
pub mod watch;
pub mod words;
