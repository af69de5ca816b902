//! `fleet-reporterd`: reads the station's health (the recorder's status file, retentiond's
//! metrics file, the uploader's status file, the machine, storage wear, the clock) and publishes it retained on
//! `fleet/v1/devices/{id}/health`, on change and at a heartbeat (ADR 0006).
//!
//! A folder of small rooms: [`config`] (its file and the station identity it borrows),
//! [`recorder`], [`retention`] and [`uploader`] (the other daemons' files), [`window`] (24-hour counts),
//! [`report`] (the message, when it changed, fitting it in its limit), [`logs`] (signed
//! journal requests), [`daemon`] (the loop).
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod logs;
pub mod recorder;
pub mod report;
pub mod retention;
pub mod uploader;
pub mod window;
