//! Structured JSON logs for Lambda (CloudWatch), level from `RUST_LOG` (default info).

pub fn init_lambda_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,deltalake_core::writer::stats=error"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(true)
        .try_init();
}
