//! Fakes and harnesses shared by tests. A dev-dependency only: never linked into a daemon.
//!
//! - [`mosquitto::Mosquitto`]: a real mosquitto on a free loopback port, killed on drop.
//! - [`listen::start_on_free_port`]: any test server on a free loopback port, proven to be
//!   the process listening there.
//! - [`operator::Operator`]: signs and publishes bundles (retained chunks + manifest) and
//!   offers with `fleet-proto`, and can publish anything else a broken tool or an attacker
//!   would.
//! - [`watch::Watcher`]: follows stations' retained state and events.
//! - [`docs::fenced_blocks`]: the samples of a document, as a reader copies them.
//! - [`rauc::Station`]: the real `rauc service` on a private D-Bus with file-backed slots and
//!   `fleet-bootctl` (U-Boot flow) as its custom backend; simulated U-Boot power-ons.
pub mod docs;
pub mod listen;
pub mod mosquitto;
pub mod operator;
pub mod rauc;
pub mod watch;

pub use mosquitto::Mosquitto;
pub use operator::Operator;
pub use watch::Watcher;
