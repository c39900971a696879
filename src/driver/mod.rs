//! tokio drivers
