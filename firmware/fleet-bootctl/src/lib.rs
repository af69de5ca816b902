//! fleet-bootctl
