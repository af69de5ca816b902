//! fleet-updated
