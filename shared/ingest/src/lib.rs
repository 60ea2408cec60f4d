//! pinpipe's ingest API (contract §2): the Kafka REST proxy v2 and API Gateway Kinesis proxy
//! routes, validated with the record model's rules (`pinpipe-model`), producing to Kafka/MSK
//! (rdkafka) and Kinesis. It links no dataframe or Delta code.
//!
//! `Ingest::handle` is a plain function of (request parts) → reply, so the Lambda (through
//! lambda_http and `Ingest::handle_http`), `pinpipe serve` (hyper) and `pinpipe invoke
//! ingest-api` share it. The same function also creates the Kafka topics for CloudFormation
//! (`topics`).

pub mod api;
pub mod config;
pub mod error;
pub mod json;
pub mod kafka;
pub mod kinesis;
pub mod topics;

pub use api::{Ingest, Reply};
pub use config::IngestConfig;
pub use error::Error;

/// Makes the AWS SDK's TLS provider (rustls with aws-lc-rs) the process default, which the
/// HTTPS clients outside the SDK (reqwest) then use: one crypto library in the binary, not
/// two. Idempotent; call it before building such a client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests;
