//! The scheduled analysis Lambda: configuration is read once per container; each EventBridge
//! event runs `pinpipe_core::handlers::batch_analysis`.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pinpipe_core::config::{init_lambda_logging, Config};
use pinpipe_core::handlers::batch_analysis;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let cfg = Config::from_env()?;
    let cfg = &cfg;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
        let response = batch_analysis(cfg, event.payload).await?;
        Ok::<_, Error>(serde_json::to_value(response)?)
    }))
    .await
}
