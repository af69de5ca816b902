//! The station update engine (pure): `step(state, event, now)`.
