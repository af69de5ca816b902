//! fleet-uploaderd: promoted recordings leave the station as verified FLAC (or unchanged WAV),
//! and become deletable only once the server confirmed them (ADR 0007).
//!
//! The decisions are `fleet_core::upload`; this crate reads the index (`daemon`), encodes and
//! verifies (`flac`), names and checksums the object (`object`), paces the link (`pace`), talks
//! S3 (`s3`) or SFTP (`sftp`), carries one recording from the index row to the mark (`upload`), and keeps its state
//! (`state`) and status (`status`) files. `run` is the loop.
pub mod config;
pub mod daemon;
pub mod flac;
pub mod object;
pub mod pace;
pub mod run;
pub mod s3;
pub mod sftp;
pub mod state;
pub mod status;
pub mod upload;
