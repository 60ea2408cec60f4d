//! `pinpipe consume`: what Lambda's event-source mappings do, on one machine. Polls a real
//! Kafka broker or Kinesis stream, hands the sink handlers MSK- and Kinesis-shaped events, and
//! moves its position only after the sink succeeded, so a failure means redelivery (which the
//! sinks' exactly-once keys absorb), never loss.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use pinpipe_core::jobs::handlers::{KafkaSink, KinesisSink};
use pinpipe_core::watermark::SequenceNumber;
use pinpipe_core::{Error, Kind, PipelineId, Result};

/// Batching, like an event-source mapping's batch size and window.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    pub batch_size: usize,
    pub batch_window: Duration,
    /// Stop after this long without records (None: run until `stop` is set).
    pub idle_exit: Option<Duration>,
    /// Pause before redelivering a batch the sink failed.
    pub retry_delay: Duration,
    /// Stop once this many records were received (the demo knows how many it sent).
    pub stop_after: Option<u64>,
    /// Records received so far, for a producer that must not run too far ahead (the demo).
    pub received: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            batch_size: 10_000,
            batch_window: Duration::from_millis(500),
            idle_exit: None,
            retry_delay: Duration::from_secs(1),
            stop_after: None,
            received: None,
        }
    }
}

/// Totals over a consume run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ConsumeReport {
    pub batches: u64,
    pub received: u64,
    pub tabled: u64,
    pub quarantined: u64,
    pub already_present: u64,
    /// Batches (or Kinesis records) the sink failed and that were delivered again.
    pub redelivered: u64,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One consumed message: `(topic, partition, offset, ts_ms, key, value)`.
pub type ConsumedMessage = (String, i32, i64, i64, Option<Vec<u8>>, Vec<u8>);

/// An MSK event (as Lambda sends it) for `messages`.
pub fn msk_event(bootstrap: &str, messages: &[ConsumedMessage]) -> Value {
    let mut records: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (topic, partition, offset, ts, key, value) in messages {
        records.entry(format!("{topic}-{partition}")).or_default().push(json!({
            "topic": topic, "partition": partition, "offset": offset, "timestamp": ts,
            "timestampType": "CREATE_TIME", "key": key.as_ref().map(|k| b64(k)), "value": b64(value), "headers": [],
        }));
    }
    json!({"eventSource": "aws:kafka", "eventSourceArn": "arn:aws:kafka:local:000000000000:cluster/pinpipe/local",
           "bootstrapServers": bootstrap, "records": records})
}

/// Consumes the pipeline's topics into the Kafka sink until idle or stopped.
pub async fn consume_kafka(
    bootstrap: &str,
    id: &PipelineId,
    sink: &mut KafkaSink,
    opts: &ConsumeOptions,
    stop: Arc<AtomicBool>,
) -> Result<ConsumeReport> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("pinpipe-sink-{}", id.as_str()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| Error::Config(format!("Kafka consumer for {bootstrap}: {e}")))?;
    // Every partition assigned directly (no group rebalance to wait for), each from its
    // committed offset, or the beginning when none was committed.
    let mut tpl = TopicPartitionList::new();
    for kind in Kind::ALL {
        let topic = id.topic(kind);
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| Error::Config(format!("reading topic {topic} from {bootstrap}: {e}")))?;
        for t in md.topics() {
            if t.error().is_some() {
                return Err(Error::Config(format!("topic {topic} is not available on {bootstrap}; create it first")));
            }
            for p in t.partitions() {
                let _ = tpl.add_partition_offset(&topic, p.id(), Offset::Stored);
            }
        }
    }
    consumer.assign(&tpl).map_err(|e| Error::Config(format!("assigning {tpl:?}: {e}")))?;
    let consumer = Arc::new(consumer);
    let mut report = ConsumeReport::default();
    let mut last_record = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Poll on a blocking thread: librdkafka's poll blocks.
        let (c, size, window) = (consumer.clone(), opts.batch_size, opts.batch_window);
        let batch = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let started = Instant::now();
            while batch.len() < size && started.elapsed() < window {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => batch.push((
                        m.topic().to_string(),
                        m.partition(),
                        m.offset(),
                        m.timestamp().to_millis().unwrap_or(0),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().unwrap_or_default().to_vec(),
                    )),
                    Some(Err(e)) => tracing::warn!(error = %e, "kafka poll"),
                    None => {}
                }
            }
            batch
        })
        .await
        .map_err(|e| Error::Config(format!("consumer thread: {e}")))?;
        if batch.is_empty() {
            if opts.idle_exit.is_some_and(|d| last_record.elapsed() >= d) {
                break;
            }
            continue;
        }
        let event = serde_json::from_value(msk_event(bootstrap, &batch))
            .map_err(|e| Error::Config(format!("building an MSK event: {e}")))?;
        match sink.handle(event).await {
            Ok(r) => {
                report.batches += 1;
                report.received += r.received;
                report.tabled += r.tabled;
                report.quarantined += r.quarantined;
                report.already_present += r.already_present;
                // Commit the next offset of every partition in the batch, only now.
                let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
                for (t, p, o, ..) in &batch {
                    let e = next.entry((t.clone(), *p)).or_insert(o + 1);
                    *e = (*e).max(o + 1);
                }
                let mut tpl = TopicPartitionList::new();
                for ((t, p), o) in &next {
                    let _ = tpl.add_partition_offset(t, *p, Offset::Offset(*o));
                }
                // Asynchronous: a broker outage must not stall the loop, and a commit that is
                // lost only means a redelivery, which the tables' watermarks absorb.
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, "committing offsets failed; they will be redelivered and skipped");
                }
                if let Some(counter) = &opts.received {
                    counter.store(report.received, Ordering::Relaxed);
                }
                if opts.stop_after.is_some_and(|n| report.received >= n) {
                    break;
                }
            }
            Err(e) => {
                // As Lambda does: the same records again, after a pause.
                tracing::error!(error = %e, records = batch.len(), "kafka sink failed; redelivering the batch");
                report.redelivered += 1;
                let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
                for (t, p, o, ..) in &batch {
                    let e = first.entry((t.clone(), *p)).or_insert(*o);
                    *e = (*e).min(*o);
                }
                tokio::time::sleep(opts.retry_delay).await;
                for ((t, p), o) in first {
                    consumer
                        .seek(&t, p, Offset::Offset(o), Duration::from_secs(10))
                        .map_err(|e| Error::Config(format!("seeking {t}-{p} back to {o}: {e}")))?;
                }
            }
        }
        // Idle time counts from the end of the sink's work, not from the poll.
        last_record = Instant::now();
    }
    Ok(report)
}

/// A Kinesis event (as Lambda sends it) for records of one shard.
pub fn kinesis_event(stream: &str, shard: &str, region: &str, records: &[aws_sdk_kinesis::types::Record]) -> Value {
    let recs: Vec<Value> = records
        .iter()
        .map(|r| {
            let ts = r.approximate_arrival_timestamp().map(|t| t.as_secs_f64()).unwrap_or(0.0);
            json!({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.partition_key(),
                            "sequenceNumber": r.sequence_number(), "data": b64(r.data().as_ref()),
                            "approximateArrivalTimestamp": ts},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", r.sequence_number()), "eventName": "aws:kinesis:record",
                "awsRegion": region,
                "eventSourceARN": format!("arn:aws:kinesis:{region}:000000000000:stream/{stream}"),
            })
        })
        .collect();
    json!({"Records": recs})
}

/// Polls every shard of the pipeline's streams into the Kinesis sink until idle or stopped.
/// A shard starts after the sequence number its table already holds (the sink's own
/// exactly-once watermark), so a restarted consumer resumes where the tables are.
pub async fn consume_kinesis(
    client: &aws_sdk_kinesis::Client,
    id: &PipelineId,
    sink: &mut KinesisSink,
    opts: &ConsumeOptions,
    stop: Arc<AtomicBool>,
) -> Result<ConsumeReport> {
    use aws_sdk_kinesis::types::ShardIteratorType;
    let region = client.config().region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
    // (stream, shard, kind) → iterator
    let mut shards: Vec<(String, String, Kind, Option<String>)> = Vec::new();
    for kind in Kind::ALL {
        let stream = id.stream(kind);
        let listed = client.list_shards().stream_name(&stream).send().await.map_err(|e| kinesis_error(format!("listing shards of {stream}"), &e))?;
        for shard in listed.shards() {
            shards.push((stream.clone(), shard.shard_id().to_string(), kind, None));
        }
    }
    let mut report = ConsumeReport::default();
    let mut last_record = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut any = false;
        for (stream, shard, kind, iterator) in shards.iter_mut() {
            if iterator.is_none() {
                let app_id = format!("{stream}-{shard}");
                let mark: Option<SequenceNumber> = sink.tables.mark(*kind, &app_id).await?;
                let mut req = client.get_shard_iterator().stream_name(stream.as_str()).shard_id(shard.as_str());
                req = match mark {
                    Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq.to_string()),
                    None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                };
                let out = req.send().await.map_err(|e| kinesis_error(format!("shard iterator for {stream}/{shard}"), &e))?;
                *iterator = out.shard_iterator().map(str::to_string);
            }
            let Some(it) = iterator.clone() else { continue };
            let got = match client.get_records().shard_iterator(it).limit(opts.batch_size.min(10_000) as i32).send().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(stream = %stream, shard = %shard, error = %pinpipe_core::error::chain(&e), "get_records; will retry");
                    *iterator = None;
                    continue;
                }
            };
            let records = got.records();
            if records.is_empty() {
                *iterator = got.next_shard_iterator().map(str::to_string);
                continue;
            }
            any = true;
            let event = serde_json::from_value(kinesis_event(stream, shard, &region, records))
                .map_err(|e| Error::Config(format!("building a Kinesis event: {e}")))?;
            let r = sink.handle(event).await;
            match r {
                Ok(r) if r.batch_item_failures.is_empty() => {
                    report.batches += 1;
                    report.received += r.received;
                    report.tabled += r.tabled;
                    report.quarantined += r.quarantined;
                    report.already_present += r.at_or_below_watermark;
                    *iterator = got.next_shard_iterator().map(str::to_string);
                }
                other => {
                    // As Lambda does with ReportBatchItemFailures (or a failed invocation):
                    // resume the shard from the lowest failed record (or the stored watermark).
                    match &other {
                        Ok(r) => tracing::error!(failed = r.failed, errors = ?r.errors, "kinesis sink reported failures; redelivering"),
                        Err(e) => tracing::error!(error = %e, "kinesis sink failed; redelivering"),
                    }
                    report.redelivered += 1;
                    *iterator = None;
                    if let Ok(r) = &other {
                        report.tabled += r.tabled;
                        report.quarantined += r.quarantined;
                    }
                    tokio::time::sleep(opts.retry_delay).await;
                }
            }
        }
        if any {
            last_record = Instant::now();
        } else {
            if opts.idle_exit.is_some_and(|d| last_record.elapsed() >= d) {
                break;
            }
            // GetRecords allows five calls per second per shard.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(report)
}

fn kinesis_error(what: String, e: &(dyn std::error::Error + 'static)) -> Error {
    Error::Config(format!("{what}: {} (is Kinesis at AWS_ENDPOINT_URL_KINESIS up, and do the streams exist?)",
        pinpipe_core::error::chain(e)))
}
