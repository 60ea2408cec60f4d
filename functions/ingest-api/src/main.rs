//! The ingest API Lambda, on lambda_http: one handler for API Gateway REST APIs, HTTP APIs and
//! Function URLs, which also serves the stack's `Custom::KafkaTopics` resource (it is the
//! function inside the cluster's VPC; its events are passed through). Configuration and the
//! Kafka/Kinesis producers are built once per container; each event runs `Ingest::handle_http`.

use lambda_http::{service_fn, Error, Request};
use pinpipe_ingest::{Ingest, IngestConfig};
use pinpipe_model::{logging::init_lambda_logging, metrics};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let started = std::time::Instant::now();
    let cfg = IngestConfig::from_env()?;
    metrics::configure(cfg.metrics);
    let ingest = Ingest::new(cfg).await?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "ingest api ready");
    let ingest = &ingest;
    lambda_http::run(service_fn(move |req: Request| async move { ingest.handle_http(req).await.map_err(Error::from) })).await
}
