//! Writing batches to the cleaned tables exactly once (contract §4), and `clean` over a landing.
//!
//! Every writer goes through `Tables::write`: per source partition it skips records at or
//! below the stored txn watermark, commits quarantined records first (their own watermark),
//! then the cleaned rows with the batch's highest offset as the data table's watermark, in
//! the same commit as the rows. A crash between the two commits is healed by redelivery.
//!
//! `tables` is the writer, `catch_up` cleans a whole landing through it; `coverage` is what a
//! table holds of each source (watermarks and gaps), `shard_slots` where a Kinesis shard's
//! watermark is kept, `ledger` the forgotten `ind`s every writer obeys, `quality` the tables'
//! quality counts.

pub mod catch_up;
pub mod coverage;
pub mod ledger;
pub mod quality;
pub mod shard_slots;
pub mod tables;

pub use catch_up::*;
pub use tables::*;
