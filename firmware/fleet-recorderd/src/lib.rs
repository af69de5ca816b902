//! fleet-recorderd
