//! Typed errors for the library; binaries add context with `anyhow`.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("table {table} has a conflicting schema: {detail}")]
    SchemaConflict { table: String, detail: String },
    #[error("storage error at {location}: {source}")]
    Storage {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("delta table {table}: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    #[error("dataframe error: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("io error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Another writer committed some of the same positions first (seen by our own check or by
    /// Delta's); the writer stages the batch again against the newer table and retries.
    #[error("table {table}: another writer committed the same source positions first ({detail})")]
    Conflict { table: String, detail: String },
    /// A table another engine changed in a way pinpipe cannot read or write correctly.
    #[error("table {table} is not one pinpipe can use: {what}")]
    Unsupported { table: String, what: String },
    /// A crash injected by the fault schedules (`Tables::inject_crash_after_quarantine`).
    #[cfg(any(test, feature = "fault-injection"))]
    #[error("injected crash between the quarantine and the data commit")]
    InjectedCrash,
}

impl From<pinpipe_model::Error> for Error {
    fn from(e: pinpipe_model::Error) -> Self {
        match e {
            pinpipe_model::Error::Config(m) => Error::Config(m),
            pinpipe_model::Error::Input { path, reason } => Error::Input { path, reason },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn delta(table: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        Error::Delta { table: table.into(), source: Box::new(source) }
    }
    /// A commit lost a race with another writer: retrying against the newer table can succeed.
    pub fn is_conflict(&self) -> bool {
        use deltalake::kernel::transaction::TransactionError;
        match self {
            Error::Conflict { .. } => true,
            Error::Delta { source, .. } => matches!(
                source.as_ref(),
                deltalake::DeltaTableError::VersionAlreadyExists(_)
                    | deltalake::DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(_) | TransactionError::MaxCommitAttempts(_)
                    }
            ),
            _ => false,
        }
    }
    pub fn input(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Input { path: path.into(), reason: reason.into() }
    }
}

pub use pinpipe_model::error::chain;
