//! fleet-retentiond
