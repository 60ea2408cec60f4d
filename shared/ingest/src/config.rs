//! The ingest function's configuration (contract §7), from the environment or flags.

use std::time::Duration;

use pinpipe_model::{Kind, PipelineId};

use crate::error::{Error, Result};

/// How the producer authenticates to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaAuth {
    /// Plain TCP, no authentication (local brokers).
    Plaintext,
    /// MSK IAM: TLS + SASL OAUTHBEARER, tokens signed with the default AWS credential chain.
    MskIam,
}

pub const DEFAULT_LINGER_MS: u32 = 0;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub id: PipelineId,
    /// Bootstrap servers; `None` turns the Kafka routes into 503s that say what to set.
    pub kafka_brokers: Option<String>,
    pub kafka_auth: KafkaAuth,
    /// Accepted topics with their kind (default `<ID>.pin|geo|user`).
    pub topics: Vec<(String, Kind)>,
    /// Accepted streams with their kind (default `streaming-<ID>-pin|geo|user`).
    pub streams: Vec<(String, Kind)>,
    /// Whether the Kinesis routes are served (a Kinesis client is built).
    pub kinesis: bool,
    /// The Kinesis endpoint, when not the AWS SDK's (`AWS_ENDPOINT_URL_KINESIS`, …).
    pub kinesis_endpoint: Option<String>,
    /// Upper bound for one request's produce: past it the broker counts as unreachable (503).
    pub produce_timeout: Duration,
    /// The producer's linger: how long records wait to share a ProduceRequest with records of
    /// requests arriving at the same moment. Each reply waits for its records' delivery, so
    /// this adds at most that much latency and saves broker round trips under load.
    pub linger_ms: u32,
    /// The AWS region (`AWS_REGION`, set by Lambda), which signs MSK IAM tokens.
    pub region: Option<String>,
    /// Whether EMF metric lines are written (`PINPIPE_METRICS`, default on inside Lambda).
    pub metrics: bool,
}

impl IngestConfig {
    /// The defaults for pipeline `id`: its three topics and streams, no brokers (the Kafka
    /// routes answer 503), Kinesis on, a 10 s produce timeout.
    pub fn new(id: PipelineId) -> Self {
        IngestConfig {
            kafka_brokers: None,
            kafka_auth: KafkaAuth::Plaintext,
            topics: Kind::ALL.iter().map(|k| (id.topic(*k), *k)).collect(),
            streams: Kind::ALL.iter().map(|k| (id.stream(*k), *k)).collect(),
            kinesis: true,
            kinesis_endpoint: None,
            produce_timeout: Duration::from_millis(10_000),
            linger_ms: DEFAULT_LINGER_MS,
            region: None,
            metrics: false,
            id,
        }
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads PINPIPE_ID, PINPIPE_KAFKA_BROKERS, PINPIPE_KAFKA_AUTH, PINPIPE_TOPICS,
    /// PINPIPE_STREAMS, PINPIPE_KINESIS (default on), PINPIPE_PRODUCE_TIMEOUT_MS,
    /// PINPIPE_KAFKA_LINGER_MS, PINPIPE_METRICS, and Lambda's AWS_REGION.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let id = PipelineId::new(&get("PINPIPE_ID").ok_or_else(|| {
            Error::Config("PINPIPE_ID is not set (see README, Configuration)".into())
        })?)?;
        let kafka_auth = match get("PINPIPE_KAFKA_AUTH").as_deref() {
            None | Some("plaintext") => KafkaAuth::Plaintext,
            Some("msk-iam") => KafkaAuth::MskIam,
            Some(other) => {
                return Err(Error::Config(format!("PINPIPE_KAFKA_AUTH={other:?}: use plaintext or msk-iam")))
            }
        };
        let names = |var: &str, default: Vec<String>| -> Result<Vec<(String, Kind)>> {
            let list = get(var).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or(default);
            list.into_iter()
                .map(|n| match Kind::from_source_name(&n) {
                    Some(k) => Ok((n, k)),
                    None => Err(Error::Config(format!("{var}: {n:?} does not end in pin, geo or user"))),
                })
                .collect()
        };
        let timeout_ms: u64 = match get("PINPIPE_PRODUCE_TIMEOUT_MS") {
            None => 10_000,
            Some(v) => v.parse().map_err(|_| Error::Config(format!("PINPIPE_PRODUCE_TIMEOUT_MS={v:?} is not a whole number")))?,
        };
        let linger_ms: u32 = match get("PINPIPE_KAFKA_LINGER_MS") {
            None => DEFAULT_LINGER_MS,
            Some(v) => v.parse().map_err(|_| Error::Config(format!("PINPIPE_KAFKA_LINGER_MS={v:?} is not a whole number")))?,
        };
        // PINPIPE_KINESIS: on (the SDK's endpoint), off, or an endpoint URL.
        let (kinesis, kinesis_endpoint) = match get("PINPIPE_KINESIS").as_deref() {
            None | Some("on" | "true" | "1") => (true, None),
            Some("off" | "false" | "0") => (false, None),
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => (true, Some(url.to_string())),
            Some(other) => {
                return Err(Error::Config(format!("PINPIPE_KINESIS={other:?}: use on, off or an endpoint URL (http://…)")))
            }
        };
        Ok(IngestConfig {
            linger_ms,
            kinesis,
            kinesis_endpoint,
            topics: names("PINPIPE_TOPICS", Kind::ALL.iter().map(|k| id.topic(*k)).collect())?,
            streams: names("PINPIPE_STREAMS", Kind::ALL.iter().map(|k| id.stream(*k)).collect())?,
            kafka_brokers: get("PINPIPE_KAFKA_BROKERS"),
            kafka_auth,
            produce_timeout: Duration::from_millis(timeout_ms.max(1)),
            region: get("AWS_REGION"),
            metrics: pinpipe_model::metrics::setting(get("PINPIPE_METRICS").as_deref(), get("AWS_LAMBDA_FUNCTION_NAME").is_some()),
            id,
        })
    }
}
