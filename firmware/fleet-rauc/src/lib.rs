//! fleet-rauc
