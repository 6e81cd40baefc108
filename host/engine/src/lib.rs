//! Applies a Plan on tokio: concurrency, timeouts, retries, journal and resume
