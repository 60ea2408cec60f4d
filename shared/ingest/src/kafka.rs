//! The Kafka producer: built once per container, idempotent, acks=all, compressed; a record is
//! reported stored only after its delivery report (contract §2).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::OAuthToken;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::config::{IngestConfig, KafkaAuth};
use crate::error::{Error, Result};

/// Signs MSK IAM tokens (SASL OAUTHBEARER) with the default AWS credential chain when asked.
pub struct PinpipeContext {
    iam: Option<(aws_config::Region, tokio::runtime::Handle)>,
}

impl ClientContext for PinpipeContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _: Option<&str>) -> std::result::Result<OAuthToken, Box<dyn std::error::Error>> {
        let (region, rt) = self.iam.clone().ok_or("OAUTHBEARER token asked for without PINPIPE_KAFKA_AUTH=msk-iam")?;
        // librdkafka calls this on its own thread; the signer is async, so run it on the runtime.
        let (token, lifetime_ms) = std::thread::spawn(move || {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), aws_msk_iam_sasl_signer::generate_auth_token(region)).await
            })
        })
        .join()
        .map_err(|_| "MSK IAM token signer panicked")???;
        Ok(OAuthToken { token, principal_name: String::new(), lifetime_ms })
    }
}

/// Delivery reports go straight into the request's `Pending`; rdkafka's polling thread calls this.
impl ProducerContext for PinpipeContext {
    type DeliveryOpaque = Box<(Arc<Pending>, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Outcome::Stored { partition: m.partition(), offset: m.offset() },
            Err((e, _)) => Outcome::Failed { retriable: retriable(e), message: e.to_string() },
        };
        slot.0.settle(slot.1, outcome);
    }
}

/// One request's records awaiting their delivery reports. The request is woken once, when the
/// last report is in: a future per record (rdkafka's `FutureProducer`) woke the request's task
/// from the polling thread once per record.
pub struct Pending {
    outcomes: Mutex<Vec<Option<Outcome>>>,
    remaining: AtomicUsize,
    done: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Pending {
    fn settle(&self, i: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *slot = Some(outcome);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(tx) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(());
            }
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Stored { partition: i32, offset: i64 },
    Failed { retriable: bool, message: String },
}

/// One record to produce.
pub struct OutRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub value: &'a [u8],
}

pub struct KafkaProducer {
    producer: Arc<ThreadedProducer<PinpipeContext>>,
    timeout: Duration,
}

impl KafkaProducer {
    /// Builds the producer (no connection is made until the first send).
    pub fn new(cfg: &IngestConfig, brokers: &str) -> Result<Self> {
        let (mut c, context) = client_config(cfg, brokers)?;
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            // A request waits for its delivery reports, so lingering adds latency; concurrent
            // requests still share produce batches (default 0, PINPIPE_KAFKA_LINGER_MS).
            .set("linger.ms", cfg.linger_ms.to_string())
            // Bounded: a broker that does not answer in time makes the request a 503.
            .set("message.timeout.ms", cfg.produce_timeout.as_millis().to_string());
        let producer =
            c.create_with_context(context).map_err(|e| Error::Config(format!("Kafka producer for {brokers}: {e}")))?;
        Ok(KafkaProducer { producer: Arc::new(producer), timeout: cfg.produce_timeout })
    }

    /// Produces every record and waits for each delivery report (outcomes in request order).
    /// librdkafka reports every queued record, delivered or failed by `message.timeout.ms`,
    /// so the wait is bounded.
    pub async fn send(&self, topic: &str, records: &[OutRecord<'_>]) -> Vec<Outcome> {
        if records.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pending = Arc::new(Pending {
            outcomes: Mutex::new(vec![None; records.len()]),
            remaining: AtomicUsize::new(records.len()),
            done: Mutex::new(Some(tx)),
        });
        // A full local queue drains as deliveries come in; past the timeout the record fails.
        let queue_deadline = Instant::now() + self.timeout;
        for (i, r) in records.iter().enumerate() {
            let mut rec: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(topic, Box::new((pending.clone(), i))).payload(r.value);
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            if let Some(p) = r.partition {
                rec = rec.partition(p);
            }
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < queue_deadline =>
                    {
                        rec = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        pending.settle(i, Outcome::Failed { retriable: retriable(&e), message: e.to_string() });
                        break;
                    }
                }
            }
        }
        let _ = rx.await;
        let outcomes = std::mem::take(&mut *pending.outcomes.lock().unwrap_or_else(|e| e.into_inner()));
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed { retriable: true, message: "no delivery report".into() }))
            .collect()
    }

    /// Partitions of `topic` as the brokers report them, or why they could not be read.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let producer = self.producer.clone();
        let (topic, timeout) = (topic.to_string(), self.timeout);
        tokio::task::spawn_blocking(move || {
            let md = producer.client().fetch_metadata(Some(&topic), timeout).map_err(|e| e.to_string())?;
            let t = md.topics().iter().find(|t| t.name() == topic).ok_or("topic not in metadata")?;
            if let Some(err) = t.error() {
                return Err(format!("{err:?}"));
            }
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        })
        .await
        .map_err(|e| Error::Kafka(e.to_string()))?
        .map_err(Error::Kafka)
    }

    /// Waits for queued records (shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(self.timeout);
    }
}

/// The settings every pinpipe Kafka client shares (producer, topic admin): brokers, timeouts,
/// and MSK IAM authentication when configured.
pub fn client_config(cfg: &IngestConfig, brokers: &str) -> Result<(ClientConfig, PinpipeContext)> {
    let timeout_ms = cfg.produce_timeout.as_millis().to_string();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.connection.setup.timeout.ms", &timeout_ms)
        // Reconnect soon after a broker comes back, so a client's retry of a 503 succeeds.
        .set("reconnect.backoff.max.ms", "1000")
        .set("client.id", format!("pinpipe-ingest-{}", cfg.id.as_str()));
    let iam = match cfg.kafka_auth {
        KafkaAuth::Plaintext => None,
        KafkaAuth::MskIam => {
            c.set("security.protocol", "SASL_SSL").set("sasl.mechanism", "OAUTHBEARER");
            let region = cfg
                .region
                .clone()
                .ok_or_else(|| Error::Config("PINPIPE_KAFKA_AUTH=msk-iam needs AWS_REGION".into()))?;
            let rt = tokio::runtime::Handle::try_current()
                .map_err(|_| Error::Config("Kafka clients must be built inside the async runtime".into()))?;
            Some((aws_config::Region::new(region), rt))
        }
    };
    Ok((c, PinpipeContext { iam }))
}

/// Whether a client may simply send the record again (broker down, timeout, leader moved).
fn retriable(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut | C::AllBrokersDown | C::BrokerTransportFailure | C::RequestTimedOut
            | C::NotLeaderForPartition | C::LeaderNotAvailable | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend | C::QueueFull | C::NetworkException,
        )
    )
}
