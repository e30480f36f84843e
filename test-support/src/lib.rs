//! What both test suites (`host/tests` and `tests/tests`, see "Tests" in
//! ARCHITECTURE.md) share, in one place:
//! - [`pg`]: a real PostgreSQL, each test in a schema of its own;
//! - [`relay`]: a TCP relay a test can cut, an outage as clients see it;
//! - [`orlando`]: Orlando's own DDL and INSERT, as a primary runs them;
//! - [`change_feed`]: the change feed's DDL and what the catalog says of it;
//! - [`logs`]: logs that count calls or fail some of them, built on
//!   [`ForwardLog`](replica_host::replication_log::ForwardLog).

pub mod change_feed;
pub mod logs;
pub mod orlando;
pub mod pg;
pub mod relay;
