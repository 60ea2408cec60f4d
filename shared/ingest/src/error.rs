//! Typed errors of the ingest API's library; each message says what to set or fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Kafka client could not be built or the cluster did not answer.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// A request of the stack's `Custom::KafkaTopics` resource that could not be carried out
    /// or answered.
    #[error("Kafka topics resource: {0}")]
    Topics(String),
    /// An event that is neither an HTTP request nor a custom-resource request.
    #[error("not an API Gateway, Function URL or custom-resource event: {0}")]
    Event(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<pinpipe_model::Error> for Error {
    fn from(e: pinpipe_model::Error) -> Self {
        Error::Config(e.to_string())
    }
}
