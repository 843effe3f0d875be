//! The wall clock, read in one place: whole seconds since the Unix epoch (0 if the clock is set
//! before 1970, which no decision then trusts more than any other stale time).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
