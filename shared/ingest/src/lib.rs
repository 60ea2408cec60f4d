//! pinpipe's ingest API (contract §2): the Kafka REST proxy v2 and API Gateway Kinesis proxy
//! routes, validated with the core record rules, producing to Kafka/MSK (rdkafka) and Kinesis.
//!
//! `Ingest::handle` is a plain function of (request parts) → reply, so the Lambda (through
//! `Ingest::handle_lambda_event`), `pinpipe serve` (hyper) and `pinpipe invoke ingest-api`
//! share it. The same function also creates the Kafka topics for CloudFormation (`topics`).

pub mod api;
pub mod config;
pub mod consume;
pub mod json;
pub mod kafka;
pub mod kinesis;
pub mod topics;

pub use api::{Ingest, Reply};
pub use config::IngestConfig;

#[cfg(test)]
mod tests;
