//! The fleet wire format, shared by stations and operator tools: versioned MQTT topics
//! ([`topic`]), payloads ([`payload`], and the offer from `fleet-core`), the ed25519 signing
//! envelope ([`envelope`]), bundle chunking ([`chunk`]) and every size limit ([`Limits`]).
//!
//! The contract is written down in `docs/reference/mqtt-protocol.md`.
//!
//! A station handles an offer message like this:
//! ```
//! # use fleet_proto::{envelope, Limits, TrustedKeys};
//! # use fleet_core::update::{Event, Offer, SignatureVerdict};
//! fn to_event(bytes: &[u8], trusted: &TrustedKeys) -> Event {
//!     match envelope::open_json::<Offer>(bytes, envelope::Kind::Offer, trusted, &Limits::DEFAULT) {
//!         Ok(o) => Event::OfferReceived {
//!             offer: o.value,
//!             verdict: SignatureVerdict::Trusted { key_id: o.key_id },
//!         },
//!         Err(e) => Event::OfferUnusable { reason: e.reject_reason() },
//!     }
//! }
//! ```
#![forbid(unsafe_code)]

pub mod chunk;
pub mod config_push;
pub mod delta;
pub mod envelope;
pub mod health;
pub mod json;
pub mod limits;
pub mod logs;
pub mod payload;
pub mod rollout;
pub mod topic;
pub mod trust;

pub use envelope::{EnvelopeError, Kind, Opened, TrustedKeys};
pub use fleet_core::update::Offer;
pub use limits::{DEFAULT_CHUNK_SIZE, Limits};
pub use payload::{BundleManifest, Presence, StationEvent, StationState};
pub use topic::Topic;
