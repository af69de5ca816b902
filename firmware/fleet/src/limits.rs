//! Every bound the recovery CLI keeps, in one place. The CLI reads files other programs wrote
//! (a bundle from a USB stick, the updater's journal, an interrupted reset's intent) and waits
//! on other programs (the bus, RAUC): each read is size-limited and each wait time-limited.
use std::time::Duration;

/// Largest CMS signature read from the end of a bundle file (a manifest and a certificate
/// chain are a few KiB).
pub const MAX_CMS_BYTES: u64 = 1024 * 1024;
/// Largest updater journal read: the updater's own limit, from the journal's definition.
pub use fleet_core::update::journal::MAX_JOURNAL_BYTES;
/// Most entries of `<data>/fleet/` a factory reset lists (a sane station has a handful).
pub const MAX_ENTRIES: usize = 4096;
/// Most journal lines `fleet logs` asks for: a 115200-baud console prints about 140 lines a
/// second, so this is over a minute of scrolling already.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Longest wait for the bus to accept a connection: a wedged bus must not hang the console.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest single call to RAUC (status, mark). An install waits for RAUC's own completion,
/// bounded by `fleet_rauc::Limits::install_timeout`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
