//! Delta Lake tables, one job per file: the contract's schemas (`schema`), opening and
//! refreshing (`open`), what the log says (`log`: txn watermarks, checkpoints, metadata),
//! appends and commits (`write`), arrow ↔ polars (`convert`, `bridge`), reading files
//! (`read`) and copy-on-write deletes (`delete`). Everything is re-exported here, so callers
//! write `delta::open`, `delta::append`, ….

pub mod bridge;
mod convert;
mod delete;
mod log;
mod open;
mod read;
mod schema;
mod write;

pub use convert::*;
pub use delete::*;
pub use log::*;
pub use open::*;
pub use read::*;
pub use schema::*;
pub use write::*;
