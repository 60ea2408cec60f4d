//! The `Custom::KafkaTopics` CloudFormation resource (infra/template.yaml), served by the ingest
//! binary deployed as `KafkaTopicsFunction` in the brokers' subnets (an operator's machine
//! cannot reach private MSK brokers), with a role of its own: the internet-facing ingest
//! function cannot create or alter topics.
//!
//! Create and Update make the listed topics exist with at least the asked partition count
//! (existing topics are kept, partitions only grow: Kafka cannot remove them). Delete keeps the
//! topics and their records, as the stack keeps its buckets. Every request is answered on the
//! event's pre-signed `ResponseURL`, success or not, so a stack never waits for an hour on a
//! resource that failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{json, Value};

use crate::config::{IngestConfig, KafkaAuth};
use crate::error::Error;
use crate::kafka::{client_config, PinpipeContext};

/// Whether `event` is a CloudFormation custom-resource request rather than an API request.
pub fn is_custom_resource_event(event: &Value) -> bool {
    event.get("RequestType").is_some() && event.get("ResponseURL").is_some()
}

/// What the resource asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicsSpec {
    pub topics: Vec<String>,
    pub partitions: i32,
    /// `None` (0 or absent in the request): the cluster's broker count, at most 3, so the
    /// default fits a 2-broker cluster as well as a 3-broker one.
    pub replication_factor: Option<i32>,
}

/// The replication factor used when the resource leaves it to the cluster.
pub const MAX_AUTO_REPLICATION: i32 = 3;

/// The replication factor for a cluster of `brokers` brokers when none is asked for.
pub fn auto_replication(brokers: usize) -> i32 {
    (brokers as i32).clamp(1, MAX_AUTO_REPLICATION)
}

impl TopicsSpec {
    /// Reads `ResourceProperties` (CloudFormation passes numbers as strings).
    pub fn from_properties(p: &Value) -> Result<Self, Error> {
        Self::parse(p).map_err(Error::Topics)
    }

    fn parse(p: &Value) -> Result<Self, String> {
        let topics: Vec<String> = p
            .get("Topics")
            .and_then(Value::as_array)
            .ok_or("ResourceProperties.Topics must be a list of topic names")?
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or("every topic name must be a string"))
            .collect::<Result<_, _>>()?;
        if topics.is_empty() {
            return Err("ResourceProperties.Topics is empty".into());
        }
        let number = |key: &str, default: i32, min: i64| -> Result<i32, String> {
            match p.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|n| (min..=10_000).contains(n))
                    .map(|n| n as i32)
                    .ok_or_else(|| format!("ResourceProperties.{key} must be a whole number from {min}, got {v}")),
            }
        };
        let replication = number("ReplicationFactor", 0, 0)?;
        Ok(TopicsSpec {
            topics,
            partitions: number("Partitions", 1, 1)?,
            replication_factor: (replication > 0).then_some(replication),
        })
    }
}

/// What happened to each topic, for the resource's `Data` and the logs.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicOutcome {
    Created,
    Existed { partitions: i32 },
    Grown { from: i32, to: i32 },
    /// More partitions than asked: kept, since Kafka cannot remove partitions.
    KeptMore { partitions: i32 },
}

impl std::fmt::Display for TopicOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicOutcome::Created => write!(f, "created"),
            TopicOutcome::Existed { partitions } => write!(f, "existed with {partitions} partitions"),
            TopicOutcome::Grown { from, to } => write!(f, "grown from {from} to {to} partitions"),
            TopicOutcome::KeptMore { partitions } => {
                write!(f, "kept its {partitions} partitions (Kafka cannot remove partitions)")
            }
        }
    }
}

/// Makes every topic of `spec` exist with at least `spec.partitions` partitions; idempotent.
pub async fn ensure_topics(
    cfg: &IngestConfig,
    brokers: &str,
    spec: &TopicsSpec,
) -> Result<BTreeMap<String, TopicOutcome>, Error> {
    ensure(cfg, brokers, spec).await.map_err(Error::Kafka)
}

async fn ensure(cfg: &IngestConfig, brokers: &str, spec: &TopicsSpec) -> Result<BTreeMap<String, TopicOutcome>, String> {
    let (config, context) = client_config(cfg, brokers).map_err(|e| e.to_string())?;
    let admin: Arc<AdminClient<PinpipeContext>> = Arc::new(
        config.create_with_context(context).map_err(|e| format!("Kafka admin client for {brokers}: {e}"))?,
    );
    if cfg.kafka_auth == KafkaAuth::MskIam {
        set_msk_iam_token(&admin, cfg.region.as_deref()).await?;
    }
    let timeout = cfg.produce_timeout;
    let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let (before, brokers) = partition_counts(&admin, timeout).await?;
    let replication = spec.replication_factor.unwrap_or_else(|| auto_replication(brokers));

    let missing: Vec<NewTopic<'_>> = spec
        .topics
        .iter()
        .filter(|t| !before.contains_key(*t))
        .map(|t| NewTopic::new(t, spec.partitions, TopicReplication::Fixed(replication)))
        .collect();
    let mut outcomes = BTreeMap::new();
    if !missing.is_empty() {
        // Said here rather than left to the broker, whose error names neither the parameter
        // nor the cluster's size.
        if replication as usize > brokers {
            return Err(format!(
                "ReplicationFactor {replication} is more than the cluster's {brokers} brokers: set \
                 TopicReplicationFactor to at most {brokers}, or to 0 for the broker count (at most {MAX_AUTO_REPLICATION})"
            ));
        }
        let results = admin.create_topics(&missing, &opts).await.map_err(|e| format!("CreateTopics: {e}"))?;
        for r in results {
            match r {
                Ok(name) => {
                    outcomes.insert(name, TopicOutcome::Created);
                }
                // Created meanwhile (a concurrent request, or metadata that lagged): fine.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(format!("creating topic {name}: {code:?} ({code})")),
            }
        }
    }
    let (counts, _) = partition_counts(&admin, timeout).await?;
    let mut grow = Vec::new();
    for t in &spec.topics {
        if outcomes.contains_key(t) {
            continue;
        }
        let n = *counts.get(t).ok_or_else(|| format!("topic {t} is still not in the cluster's metadata"))?;
        let outcome = match n.cmp(&spec.partitions) {
            std::cmp::Ordering::Less => {
                grow.push(NewPartitions::new(t, spec.partitions as usize));
                TopicOutcome::Grown { from: n, to: spec.partitions }
            }
            std::cmp::Ordering::Equal => TopicOutcome::Existed { partitions: n },
            std::cmp::Ordering::Greater => TopicOutcome::KeptMore { partitions: n },
        };
        outcomes.insert(t.clone(), outcome);
    }
    if !grow.is_empty() {
        for r in admin.create_partitions(&grow, &opts).await.map_err(|e| format!("CreatePartitions: {e}"))? {
            if let Err((name, code)) = r {
                return Err(format!("adding partitions to {name}: {code:?} ({code})"));
            }
        }
    }
    Ok(outcomes)
}

/// Topic name → partition count, as the brokers report them, and the number of brokers.
async fn partition_counts(
    admin: &Arc<AdminClient<PinpipeContext>>,
    timeout: Duration,
) -> Result<(BTreeMap<String, i32>, usize), String> {
    // librdkafka's metadata call blocks: run it off the async threads.
    let admin = admin.clone();
    let md = tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the cluster's metadata: {e}"))?;
    let counts = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect();
    Ok((counts, md.brokers().len()))
}

/// rdkafka's admin client never polls the queue that carries OAUTHBEARER refresh requests
/// (its producer does), so the MSK IAM token is set on it directly before its first request.
async fn set_msk_iam_token(admin: &AdminClient<PinpipeContext>, region: Option<&str>) -> Result<(), String> {
    let region = region.ok_or("PINPIPE_KAFKA_AUTH=msk-iam needs AWS_REGION")?.to_string();
    let (token, lifetime_ms) = tokio::time::timeout(
        Duration::from_secs(10),
        aws_msk_iam_sasl_signer::generate_auth_token(aws_config::Region::new(region)),
    )
    .await
    .map_err(|_| "signing the MSK IAM token took over 10 s".to_string())?
    .map_err(|e| format!("signing the MSK IAM token: {e}"))?;
    let token = std::ffi::CString::new(token).map_err(|_| "the MSK IAM token holds a NUL byte".to_string())?;
    let principal = std::ffi::CString::default();
    let mut errstr = [0 as std::os::raw::c_char; 512];
    // SAFETY: the client pointer lives as long as `admin`; the strings outlive the call, which
    // copies them; errstr is a writable buffer of the length passed.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            admin.inner().native_ptr(),
            token.as_ptr(),
            lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka writes a NUL-terminated message into errstr on failure.
        let msg = unsafe { std::ffi::CStr::from_ptr(errstr.as_ptr()) }.to_string_lossy().into_owned();
        return Err(format!("setting the MSK IAM token: {msg}"));
    }
    Ok(())
}

/// Handles one custom-resource request and answers it on its ResponseURL; returns the answer.
/// Err only when the answer itself could not be delivered (then CloudFormation times out).
pub async fn handle_custom_resource(cfg: &IngestConfig, event: &Value) -> Result<Value, Error> {
    let request_type = event.get("RequestType").and_then(Value::as_str).unwrap_or("");
    let logical_id = event.get("LogicalResourceId").and_then(Value::as_str).unwrap_or("");
    let spec = TopicsSpec::from_properties(event.get("ResourceProperties").unwrap_or(&Value::Null));
    // The same topics keep the same id; a changed list gets a new one, and CloudFormation then
    // sends a Delete for the old id (which keeps the topics).
    let physical_id = match (&spec, event.get("PhysicalResourceId").and_then(Value::as_str)) {
        (_, Some(id)) if request_type == "Delete" => id.to_string(),
        (Ok(s), _) => format!("kafka-topics:{}", s.topics.join(",")),
        (Err(_), Some(id)) => id.to_string(),
        (Err(_), None) => format!("kafka-topics-failed:{logical_id}"),
    };
    let outcome: Result<Value, String> = match request_type {
        "Delete" => Ok(json!({"Topics": "kept (delete never removes topics or their records)"})),
        "Create" | "Update" => match (&spec, cfg.kafka_brokers.as_deref()) {
            (Err(e), _) => Err(e.to_string()),
            (_, None) => Err("PINPIPE_KAFKA_BROKERS is not set on the function".into()),
            (Ok(spec), Some(brokers)) => ensure(cfg, brokers, spec).await.map(|outcomes| {
                let summary: Vec<String> = outcomes.iter().map(|(t, o)| format!("{t}: {o}")).collect();
                tracing::info!(topics = %summary.join("; "), "kafka topics ensured");
                json!({"Topics": spec.topics.join(","), "Outcome": summary.join("; ")})
            }),
        },
        other => Err(format!("unknown RequestType {other:?}")),
    };
    let mut answer = json!({
        "PhysicalResourceId": physical_id,
        "StackId": event.get("StackId").cloned().unwrap_or(Value::Null),
        "RequestId": event.get("RequestId").cloned().unwrap_or(Value::Null),
        "LogicalResourceId": logical_id,
        "NoEcho": false,
    });
    match outcome {
        Ok(data) => {
            answer["Status"] = "SUCCESS".into();
            answer["Data"] = data;
        }
        Err(reason) => {
            tracing::error!(%reason, request_type, "kafka topics resource failed");
            answer["Status"] = "FAILED".into();
            answer["Reason"] = reason.into();
        }
    }
    let url = event
        .get("ResponseURL")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Topics("the event has no ResponseURL".into()))?;
    send_answer(url, &answer).await.map_err(Error::Topics)?;
    Ok(answer)
}

/// PUTs the answer to the pre-signed URL (an empty Content-Type, as the signature expects),
/// retrying a few times: an undelivered answer leaves the stack waiting for an hour.
async fn send_answer(url: &str, answer: &Value) -> Result<(), String> {
    crate::install_tls_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    let body = answer.to_string();
    let mut last = String::new();
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client.put(url).header("content-type", "").body(body.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("could not answer CloudFormation at its ResponseURL: {last}"))
}
