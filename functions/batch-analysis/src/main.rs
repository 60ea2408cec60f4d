//! The scheduled analysis Lambda: configuration is read once per container. The deployed
//! state machine invokes it once per step (`{"step": ...}`: `batch_analysis_step`); an
//! EventBridge schedule event runs the whole job in one invocation (`batch_analysis`).

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pinpipe_core::jobs::config::Config;
use pinpipe_core::logging::init_lambda_logging;
use pinpipe_core::jobs::handlers::{batch_analysis, batch_analysis_step, is_step_request};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_lambda_logging();
    let cfg = Config::from_env()?;
    pinpipe_core::metrics::configure(cfg.metrics);
    let cfg = &cfg;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let payload = event.payload;
        if is_step_request(&payload) {
            let response = batch_analysis_step(cfg, serde_json::from_value(payload)?).await?;
            Ok::<_, Error>(serde_json::to_value(response)?)
        } else {
            let response = batch_analysis(cfg, serde_json::from_value(payload)?).await?;
            Ok::<_, Error>(serde_json::to_value(response)?)
        }
    }))
    .await
}
