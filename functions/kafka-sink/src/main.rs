//! The Kafka/MSK sink Lambda: configuration and table handles are made once per container;
//! each MSK batch runs `pinpipe_core::handlers::kafka_sink`.

use aws_lambda_events::kafka::KafkaEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pinpipe_core::config::{init_lambda_logging, Config};
use pinpipe_core::handlers::kafka_sink;
use pinpipe_core::pipeline::Tables;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let cfg = Config::from_env()?;
    let tables = Mutex::new(Tables::open(&cfg.tables, &cfg.id).await?);
    let (cfg, tables) = (&cfg, &tables);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KafkaEvent>| async move {
        let mut tables = tables.lock().await;
        let response = kafka_sink(cfg, &mut tables, event.payload).await?;
        Ok::<_, Error>(serde_json::to_value(response)?)
    }))
    .await
}
