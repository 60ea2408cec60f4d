//! The ingest API Lambda behind API Gateway (REST v1 or HTTP v2 events), which also serves the
//! stack's `Custom::KafkaTopics` resource (it is the function inside the cluster's VPC).
//! Configuration and the Kafka/Kinesis producers are built once per container; each event runs
//! `Ingest::handle_lambda_event`, the same code `pinpipe invoke ingest-api` runs.

#![recursion_limit = "256"]

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pinpipe_core::config::init_lambda_logging;
use pinpipe_ingest::{Ingest, IngestConfig};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let started = std::time::Instant::now();
    let ingest = Ingest::new(IngestConfig::from_env()?).await?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "ingest api ready");
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        ingest.handle_lambda_event(&event.payload).await.map_err(Error::from)
    }))
    .await
}
