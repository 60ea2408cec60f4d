//! The ingest API Lambda behind API Gateway (REST v1 or HTTP v2 events): configuration and
//! the Kafka/Kinesis producers are built once per container; each request runs `Ingest::handle`.

use lambda_http::{service_fn, Body, Error, Request, Response};
use pinpipe_core::config::init_lambda_logging;
use pinpipe_ingest::{Ingest, IngestConfig};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let started = std::time::Instant::now();
    let ingest = Ingest::new(IngestConfig::from_env()?).await?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "ingest api ready");
    let ingest = &ingest;
    lambda_http::run(service_fn(move |req: Request| async move {
        let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let reply = ingest.handle(req.method().as_str(), req.uri().path(), content_type.as_deref(), req.body().as_ref()).await;
        Response::builder()
            .status(reply.status)
            .header("content-type", reply.content_type)
            .body(Body::Text(reply.body))
            .map_err(Error::from)
    }))
    .await
}
