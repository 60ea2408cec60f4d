//! pinpipe's core: every piece of logic the Lambdas and the `pinpipe` CLI share.

pub mod clean;
pub mod error;
pub mod names;
pub mod record;

pub use error::{Error, Result};
pub use names::{Kind, PipelineId};
pub mod bridge;
pub mod delta;
pub mod storage;
pub mod local_log;
pub mod landing;
pub mod pipeline;
pub mod analysis;
pub mod generate;
mod generate_data;
pub mod run;
pub mod report;
pub mod maintenance;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod replay;
pub mod forget;
pub mod watermark;
pub mod coverage;
pub mod schedules;
