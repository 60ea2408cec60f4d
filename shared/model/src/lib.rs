//! pinpipe's record model, shared by every function: the names derived from a pipeline id, raw
//! records and the parse that decides whether one is valid, and the metrics and log formats.
//!
//! It holds no dataframe or Delta code, so the ingest API links it without polars or deltalake.

pub mod error;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod record;
pub mod watermark;

pub use error::{Error, Result};
pub use names::{Kind, PipelineId};
