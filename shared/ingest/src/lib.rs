//! pinpipe's ingest API (contract §2): the Kafka REST proxy v2 and API Gateway Kinesis proxy
//! routes, validated with the core record rules, producing to Kafka/MSK (rdkafka) and Kinesis.
//!
//! `Ingest::handle` is a plain function of (request parts) → reply, so the Lambda
//! (lambda_http), `pinpipe serve` (hyper) and `pinpipe invoke ingest-api` share it.

pub mod api;
pub mod config;
pub mod consume;
pub mod json;
pub mod kafka;
pub mod kinesis;

pub use api::{Ingest, Reply};
pub use config::IngestConfig;

#[cfg(test)]
mod tests;
