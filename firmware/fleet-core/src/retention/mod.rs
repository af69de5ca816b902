//! The retention plan (pure). Owned by the retention work (issue 6).
