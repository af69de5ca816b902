//! The operator's wall clock, read in this one place; the functions that decide take the time
//! as a value.

/// Unix seconds now (0 if the clock reads before 1970).
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
