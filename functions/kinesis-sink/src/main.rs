//! The Kinesis sink Lambda: configuration, table handles and the landing store are made once
//! per container; each batch runs `KinesisSink::handle`, whose response carries
//! `batchItemFailures`.

use aws_lambda_events::kinesis::KinesisEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pinpipe_core::jobs::config::Config;
use pinpipe_core::logging::init_lambda_logging;
use pinpipe_core::jobs::handlers::KinesisSink;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let cfg = Config::from_env()?;
    pinpipe_core::metrics::configure(cfg.metrics);
    let sink = Mutex::new(KinesisSink::open(&cfg).await?);
    let sink = &sink;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        let response = sink.lock().await.handle(event.payload).await?;
        Ok::<_, Error>(serde_json::to_value(response)?)
    }))
    .await
}
