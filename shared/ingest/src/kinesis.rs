//! The Kinesis producer (aws-sdk-kinesis): PutRecord and PutRecords, retrying throttled
//! records with backoff and reporting what still failed per record, as Kinesis does.

use std::time::Duration;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;

/// Attempts for records Kinesis throttled (ProvisionedThroughputExceeded, InternalFailure).
const ATTEMPTS: u32 = 5;

/// A record's fate, in the shape of Kinesis's PutRecords result entries.
#[derive(Debug, Clone, PartialEq)]
pub enum PutOutcome {
    Stored { sequence_number: String, shard_id: String },
    Failed { code: String, message: String },
}

/// Why a whole call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PutError {
    /// The stream does not exist.
    NotFound(String),
    /// Kinesis could not be reached or answered with a server error: nothing was stored.
    Unavailable(String),
    /// Kinesis refused the request (its code and message).
    Refused { code: String, message: String },
}

pub struct KinesisProducer {
    client: Client,
}

impl KinesisProducer {
    /// Client from the standard AWS configuration (AWS_ENDPOINT_URL_KINESIS, AWS_REGION, …),
    /// or at `endpoint`, with every call bounded by `timeout`.
    pub async fn new(timeout: Duration, endpoint: Option<&str>) -> Self {
        KinesisProducer { client: client(endpoint, timeout).await }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn put_record(&self, stream: &str, data: Vec<u8>, partition_key: &str) -> Result<PutOutcome, PutError> {
        let out = retry_throttled(|| async {
            let sent = self.client.put_record().stream_name(stream).data(Blob::new(data.clone()))
                .partition_key(partition_key).send().await;
            sent.map_err(|e| classify(stream, e))
        })
        .await?;
        Ok(PutOutcome::Stored { sequence_number: out.sequence_number().to_string(), shard_id: out.shard_id().to_string() })
    }

    /// PutRecords; records Kinesis throttled are sent again with backoff, then reported.
    pub async fn put_records(&self, stream: &str, records: Vec<(Vec<u8>, String)>) -> Result<Vec<PutOutcome>, PutError> {
        let mut outcomes: Vec<Option<PutOutcome>> = vec![None; records.len()];
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .data(Blob::new(records[i].0.clone()))
                        .partition_key(&records[i].1)
                        .build()
                        .map_err(|e| PutError::Refused { code: "ValidationException".into(), message: e.to_string() })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let sent = retry_throttled(|| async {
                let req = self.client.put_records().stream_name(stream).set_records(Some(entries.clone()));
                req.send().await.map_err(|e| classify(stream, e))
            })
            .await;
            let out = match sent {
                Ok(out) => out,
                Err(err) => {
                    // Records stored by an earlier attempt stay reported as stored.
                    if outcomes.iter().all(|o| o.is_none()) {
                        return Err(err);
                    }
                    let (code, message) = match err {
                        PutError::Refused { code, message } => (code, message),
                        PutError::Unavailable(m) | PutError::NotFound(m) => ("ServiceUnavailable".into(), m),
                    };
                    for &i in &pending {
                        outcomes[i] = Some(PutOutcome::Failed { code: code.clone(), message: message.clone() });
                    }
                    break;
                }
            };
            let mut retry = Vec::new();
            for (&i, r) in pending.iter().zip(out.records()) {
                match (r.sequence_number(), r.error_code()) {
                    (Some(seq), None) => {
                        outcomes[i] = Some(PutOutcome::Stored {
                            sequence_number: seq.to_string(),
                            shard_id: r.shard_id().unwrap_or_default().to_string(),
                        })
                    }
                    (_, code) => {
                        let code = code.unwrap_or("InternalFailure").to_string();
                        let message = r.error_message().unwrap_or_default().to_string();
                        let again = matches!(code.as_str(), "ProvisionedThroughputExceededException" | "InternalFailure");
                        if again && attempt < ATTEMPTS {
                            retry.push(i);
                        }
                        outcomes[i] = Some(PutOutcome::Failed { code, message });
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            pending = retry;
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(PutOutcome::Failed { code: "InternalFailure".into(), message: "not sent".into() }))
            .collect())
    }

    /// Whether `stream` exists, with its shard count.
    pub async fn describe(&self, stream: &str) -> Result<(String, i32), PutError> {
        match self.client.describe_stream_summary().stream_name(stream).send().await {
            Ok(out) => {
                let d = out.stream_description_summary();
                Ok((d.map(|d| d.stream_status().as_str().to_string()).unwrap_or_default(), d.map(|d| d.open_shard_count()).unwrap_or(0)))
            }
            Err(e) => Err(classify(stream, e)),
        }
    }
}

/// A Kinesis client from the standard AWS configuration; `endpoint` overrides
/// AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL. Every call is bounded by `timeout`.
pub async fn client(endpoint: Option<&str>, timeout: Duration) -> Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    Client::new(&loader.load().await)
}

/// Runs `call` again with exponential backoff while Kinesis throttles the whole call.
async fn retry_throttled<T, F, Fut>(mut call: F) -> Result<T, PutError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PutError>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < ATTEMPTS && throttled(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn throttled(e: &PutError) -> bool {
    matches!(e, PutError::Refused { code, .. } if code == "ProvisionedThroughputExceededException" || code == "LimitExceededException")
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static>(stream: &str, e: SdkError<E, R>) -> PutError {
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("InternalFailure").to_string();
            let message = err.message().unwrap_or_default().to_string();
            match code.as_str() {
                "ResourceNotFoundException" => PutError::NotFound(format!("stream {stream} not found: {message}")),
                "InternalFailure" | "ServiceUnavailable" => PutError::Unavailable(format!("{code}: {message}")),
                _ => PutError::Refused { code, message },
            }
        }
        _ => PutError::Unavailable(format!("Kinesis unreachable: {}", pinpipe_model::error::chain(&e))),
    }
}
