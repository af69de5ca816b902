//! fleet-proto
