//! fleet-uploaderd: promoted recordings leave the station as verified FLAC (or unchanged WAV),
//! and become deletable only once the server confirmed them (ADR 0007).
//!
//! The decisions are `fleet_core::upload`; this crate reads the index, encodes, sends, confirms
//! and marks.
pub mod config;
pub mod flac;
