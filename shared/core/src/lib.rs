//! pinpipe's core: every piece of logic the Lambdas and the `pinpipe` CLI share.

pub mod clean;
pub mod error;
pub mod names;
pub mod record;

pub use error::{Error, Result};
pub use names::{Kind, PipelineId};
