//! Tools for developing and testing pinpipe, used by the CLI (`generate`, `demo`, `bench`,
//! `schedules`) and the tests, never by a Lambda:
//!
//! - `generate`: realistic Pinterest posts (pin, geo, user) from a seed;
//! - `fault_schedules`: random interleavings of sink batches, redeliveries, racing writers,
//!   crashes and maintenance, each checked for exactly-once;
//! - `kinesis_schedules`: the same for a Kinesis shard: retries, bisection, batches given up
//!   and replayed, re-posts.

pub mod fault_schedules;
pub mod kinesis_schedules;
pub mod generate;
mod generate_data;
