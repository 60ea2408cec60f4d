//! pinpipe's core: every piece of logic the sink and analysis Lambdas and the `pinpipe` CLI
//! share. Its folders are its layers, and imports only run down this list:
//!
//! - `jobs`: what a function or command runs (sink handlers, the analysis run, maintenance,
//!   forget, replay) and the configuration they are given;
//! - `analysis`: the nine outputs, their table readers and the HTML report;
//! - `writer`: the exactly-once writer (`Tables`), its coverage and the landing catch-up;
//! - `delta`: Delta tables (schemas, open, log, writes, conversion, reads, deletes);
//! - `storage`: locations, the raw landing and the local object store;
//! - `clean`: decoding and the cleaning rules;
//! - the record model (`pinpipe-model`, re-exported here): names, raw records, watermarks.
//!
//! `scripts/check_layers.py` (run by the tests) fails on an import up this list or a cycle.

pub mod error;
pub use error::{Error, Result};

pub use pinpipe_model::{logging, metrics, names, record, watermark};
pub use pinpipe_model::{Kind, PipelineId};

pub mod clean;
pub mod storage;
pub mod delta;
pub mod writer;
pub mod analysis;
pub mod jobs;
