//! fleet-mqtt
