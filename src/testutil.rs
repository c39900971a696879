//! Test helpers shared by the unit tests.

use std::time::Instant;

/// The origin of virtual time in tests. Nothing waits on it: tests only add to it.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}
