//! Lambda handlers as plain functions of (config, event): the `functions/` crates wrap them in
//! the Lambda runtime and `pinpipe invoke` calls them directly with an event file.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::analysis::OUTPUTS;
use crate::jobs::config::Config;
use crate::delta;
use crate::error::Result;
use crate::jobs::maintenance::{self, MaintenanceReport};
use crate::metrics::{self, Unit};
use crate::names::Kind;
use crate::writer::{self, Tables, WriteReport};
use crate::analysis::run::{self, fmt_time};

/// What the scheduled analysis did, returned as the Lambda's response.
#[derive(Debug, Serialize)]
pub struct BatchAnalysisResponse {
    pub run_time: String,
    /// Records brought in from the landing (by the exactly-once key) before analysing.
    pub catch_up: Option<WriteReport>,
    pub maintenance: Vec<MaintenanceReport>,
    /// Rows per output.
    pub outputs: std::collections::BTreeMap<String, usize>,
    /// Keys written under `PINPIPE_REPORTS`.
    pub reports: Vec<String>,
}

/// The schedule's time is the run time, so a rerun for the same schedule is identical.
pub fn scheduled_time(event: &EventBridgeEvent<serde_json::Value>) -> DateTime<Utc> {
    event.time.unwrap_or_else(|| {
        tracing::warn!("scheduled event has no time; using the current time as run_time");
        Utc::now()
    })
}

/// The daily job (replaces the Airflow DAG) in one invocation: catch up from the landing,
/// maintain the tables, compute the nine outputs, write them as tables and as
/// `reports/<date>/` + `reports/latest/`. The deployed schedule runs the same work as steps
/// (`batch_analysis_step`), each in its own invocation.
pub async fn batch_analysis(cfg: &Config, event: EventBridgeEvent<serde_json::Value>) -> Result<BatchAnalysisResponse> {
    let started = std::time::Instant::now();
    let run_time = scheduled_time(&event);
    tracing::info!(run_time = %fmt_time(&run_time), id = cfg.id.as_str(), "scheduled analysis started");
    run_started();
    let catch_up = catch_up(cfg, None).await?.map(|r| r.total());
    let maintenance = maintain(cfg, None).await?;
    let (outputs, reports) = analyze_and_report(cfg, run_time, catch_up.as_ref(), started).await?;
    Ok(BatchAnalysisResponse { run_time: fmt_time(&run_time), catch_up, maintenance, outputs, reports })
}

/// One step of the scheduled run, as the deployed state machine invokes it (infra/template.yaml,
/// DailyRun): `{"step": "catch-up" | "maintain" | "analyze", "time": <the schedule's time>,
/// "table": <one table to maintain, optional>}`. A catch-up step stops at its time budget
/// (PINPIPE_STEP_SECONDS, default 600) between two commits and answers `complete: false`; the
/// state machine then invokes it again, and it carries on from the watermarks instead of
/// starting over. Every step keeps the schedule's time as `run_time`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct StepRequest {
    pub step: String,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub table: Option<String>,
}

/// What a step did; `complete` is false only for a catch-up that ran out of its time budget.
#[derive(Debug, Serialize)]
pub struct StepResponse {
    pub step: String,
    pub run_time: String,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<WriteReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceReport>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
}

/// Whether a Lambda event is a step request rather than the schedule's EventBridge event.
pub fn is_step_request(event: &serde_json::Value) -> bool {
    event.get("step").is_some()
}

/// Runs one step (see `StepRequest`).
pub async fn batch_analysis_step(cfg: &Config, request: StepRequest) -> Result<StepResponse> {
    let started = std::time::Instant::now();
    let run_time = request.time;
    let mut response = StepResponse {
        step: request.step.clone(),
        run_time: fmt_time(&run_time),
        complete: true,
        catch_up: None,
        maintenance: Vec::new(),
        outputs: Default::default(),
        reports: Vec::new(),
    };
    match request.step.as_str() {
        "catch-up" => {
            run_started();
            let deadline = started + std::time::Duration::from_secs_f64(cfg.step_seconds);
            if let Some(report) = catch_up(cfg, Some(deadline)).await? {
                response.complete = report.complete;
                response.catch_up = Some(report.total());
            }
        }
        "maintain" => response.maintenance = maintain(cfg, request.table.as_deref()).await?,
        "analyze" => {
            let (outputs, reports) = analyze_and_report(cfg, run_time, None, started).await?;
            response.outputs = outputs;
            response.reports = reports;
        }
        other => {
            return Err(crate::Error::Config(format!(
                "unknown step {other:?}: use catch-up, maintain or analyze"
            )))
        }
    }
    tracing::info!(step = %response.step, complete = response.complete, run_time = %response.run_time, "step done");
    Ok(response)
}

/// RunSucceeded = 0 when a run starts and 1 when it finishes: the AnalysisDidNotSucceed alarm
/// fires on a window that holds a start and no success, and stays quiet on a stack that has not
/// run yet (no data at all), so it neither fires right after deploy nor on a late run.
fn run_started() {
    metrics::emit("batch-analysis", "run-started", &[("RunSucceeded", Unit::Count, 0.0)]);
}

/// Brings the tables up to date from PINPIPE_LANDING (None when no landing is configured).
async fn catch_up(cfg: &Config, deadline: Option<std::time::Instant>) -> Result<Option<writer::CleanReport>> {
    let Some(landing) = &cfg.landing else { return Ok(None) };
    let mut tables = Tables::open(&cfg.tables, &cfg.id).await?;
    tables.set_shard_idle_hours(cfg.shard_idle_hours);
    let r = writer::clean_landing_until(landing, crate::storage::landing::Layout::Sink, &mut tables, cfg.catch_up_chunk_bytes, deadline, &|_, _| {}).await?;
    let total = r.total();
    tracing::info!(received = total.received, tabled = total.tabled, quarantined = total.quarantined,
        already_present = total.skipped, complete = r.complete, "caught up from the landing");
    Ok(Some(r))
}

/// Compaction, checkpoint, vacuum and log cleanup of one table (`only`) or of all four.
async fn maintain(cfg: &Config, only: Option<&str>) -> Result<Vec<MaintenanceReport>> {
    let names: Vec<String> = Kind::ALL.iter().map(|k| cfg.id.table(*k)).chain([cfg.id.quarantine_table()]).collect();
    if let Some(name) = only {
        if !names.iter().any(|n| n == name) {
            return Err(crate::Error::Config(format!("no table {name:?} to maintain: use one of {}", names.join(", "))));
        }
    }
    let mut reports = Vec::new();
    for name in names.into_iter().filter(|n| only.is_none_or(|o| o == n)) {
        if let Some(table) = delta::open(&cfg.tables, &name).await? {
            let report = maintenance::maintain(table, &name, &cfg.maintenance).await?;
            tracing::info!(table = %name, compacted = report.files_compacted, written = report.files_written,
                vacuumed = report.files_vacuumed, checkpoint = ?report.checkpoint_at, "maintained");
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Computes the outputs for `run_time`, writes them as tables and reports, and emits the
/// run's metrics.
async fn analyze_and_report(
    cfg: &Config,
    run_time: DateTime<Utc>,
    catch_up: Option<&WriteReport>,
    started: std::time::Instant,
) -> Result<(std::collections::BTreeMap<String, usize>, Vec<String>)> {
    let run = run::analyze(&cfg.tables, &cfg.id, run_time, cfg.analysis_part_rows).await?;
    run.write_tables(&cfg.tables).await?;
    // Each run replaces every output table's files: the replaced ones are vacuumed here once
    // past retention, or they would pile up a day's worth at a time.
    for spec in OUTPUTS.iter() {
        let name = cfg.id.output_table(spec.name);
        if let Some(table) = delta::open(&cfg.tables, &name).await? {
            maintenance::vacuum(table, &name, cfg.maintenance.vacuum_retention_hours).await?;
        }
    }
    let mut reports = Vec::new();
    if let Some(root) = &cfg.reports {
        let store = root.store()?;
        let files = run.files()?;
        let date = run_time.format("%Y-%m-%d").to_string();
        for prefix in [format!("reports/{date}"), "reports/latest".to_string()] {
            reports.extend(run::write_files_to(&store, &prefix, &files).await?);
        }
    }
    let outputs = run.outputs.iter().map(|(s, df)| (s.name.to_string(), df.height())).collect();
    tracing::info!(outputs = OUTPUTS.len(), reports = reports.len(), "scheduled analysis finished");
    // RunSucceeded = 1 only here (see run_started).
    let q = &run.quality;
    let rows: u64 = q.rows_read.values().sum();
    metrics::emit("batch-analysis", "all", &[
        ("RunSucceeded", Unit::Count, 1.0),
        ("OpenGaps", Unit::Count, q.gaps as f64),
        ("RowsRead", Unit::Count, rows as f64),
        ("Quarantined", Unit::Count, q.quarantined_records as f64),
        ("CatchUpTabled", Unit::Count, catch_up.map_or(0, |c| c.tabled) as f64),
        ("Duration", Unit::Milliseconds, started.elapsed().as_secs_f64() * 1e3),
    ]);
    Ok((outputs, reports))
}

/// What the Kafka sink did with one MSK batch, returned as the Lambda's response.
#[derive(Debug, Default, Serialize)]
pub struct KafkaSinkResponse {
    pub received: u64,
    /// Landing objects written (one per contiguous run of offsets per topic-partition).
    pub landed_objects: Vec<String>,
    pub tabled: u64,
    pub quarantined: u64,
    /// Records the tables already held (a redelivery, written before).
    pub already_present: u64,
    /// Gaps this batch opened: offsets skipped past a partition's watermark, kept open (and
    /// reported) until a replay fills them or an operator closes them (`pinpipe gaps`).
    pub gaps_opened: u64,
}

/// The Kafka/MSK sink's clients, made once per container: the table handles and the landing.
pub struct KafkaSink {
    pub tables: Tables,
    landing: std::sync::Arc<dyn object_store::ObjectStore>,
}

impl KafkaSink {
    pub async fn open(cfg: &Config) -> Result<Self> {
        let landing = cfg.landing.as_ref().ok_or_else(|| {
            crate::Error::Config("PINPIPE_LANDING (--landing) is not set: the Kafka sink lands raw batches there (topics/)".into())
        })?;
        Ok(KafkaSink { tables: Tables::open(&cfg.tables, &cfg.id).await?, landing: landing.store()? })
    }

    /// One MSK batch (see `kafka_sink`).
    pub async fn handle(&mut self, event: aws_lambda_events::kafka::KafkaEvent) -> Result<KafkaSinkResponse> {
        kafka_sink(&mut self.tables, &self.landing, event).await
    }
}

/// The Kafka/MSK sink (replaces the Confluent S3 sink): lands each topic-partition's raw values
/// under PINPIPE_LANDING (contract §3; a redelivery rewrites the same keys), then cleans them into
/// the tables exactly once. A failure returns an error, so Lambda retries the whole batch;
/// what an earlier attempt stored is then skipped by its watermark.
async fn kafka_sink(
    tables: &mut Tables,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    event: aws_lambda_events::kafka::KafkaEvent,
) -> Result<KafkaSinkResponse> {
    use base64::Engine;
    use std::collections::BTreeMap;

    use crate::storage::landing::{self, SourceRecords};

    // Other instances (other partitions, or a redelivery elsewhere) may have committed since.
    tables.refresh().await?;
    let mut groups: BTreeMap<(String, i64), Vec<(i64, bytes::Bytes)>> = BTreeMap::new();
    let mut response = KafkaSinkResponse::default();
    for record in event.records.into_values().flatten() {
        response.received += 1;
        let topic = record.topic.unwrap_or_default();
        // A value that is not base64 is kept as sent; cleaning then quarantines it with a reason.
        let value = record.value.unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .map(bytes::Bytes::from)
            .unwrap_or_else(|_| bytes::Bytes::from(value.into_bytes()));
        groups.entry((topic, record.partition)).or_default().push((record.offset, bytes));
    }
    let mut by_kind: BTreeMap<Kind, Vec<SourceRecords>> = BTreeMap::new();
    // Per kind: records received and landing bytes written, for the metrics.
    let mut volume: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
    for ((topic, partition), mut records) in groups {
        let kind = Kind::from_source_name(&topic).ok_or_else(|| {
            crate::Error::Config(format!("topic {topic:?} is not a pin, geo or user topic; check the event source mapping"))
        })?;
        let v = volume.entry(kind).or_default();
        v.0 += records.len() as u64;
        records.sort_by_key(|(o, _)| *o);
        records.dedup_by_key(|(o, _)| *o);
        v.1 += records.iter().map(|(_, b)| b.len() as u64 + 1).sum::<u64>();
        // Line i of an object is offset first+i, so a gap in offsets starts a new object.
        let mut start = 0;
        for i in 1..=records.len() {
            if i == records.len() || records[i].0 != records[i - 1].0 + 1 {
                let run = &records[start..i];
                // A forgotten post's record lands as a blank line, so no redelivery puts it back.
                let lines: Vec<Option<&[u8]>> =
                    run.iter().map(|(_, b)| (!tables.is_forgotten(kind, b)).then_some(b.as_ref())).collect();
                let key = landing::write_object_with_blanks(store, &topic, partition as i32, run[0].0, &lines).await?;
                response.landed_objects.push(key.to_string());
                start = i;
            }
        }
        let source = SourceRecords::from_records(
            &topic,
            &partition.to_string(),
            records.into_iter().map(|(offset, bytes)| (offset, offset.into(), bytes)),
        );
        by_kind.entry(kind).or_default().push(source);
    }
    for (kind, sources) in by_kind {
        let started = std::time::Instant::now();
        let r = tables.write(kind, sources).await?;
        let (received, landing_bytes) = volume.get(&kind).copied().unwrap_or_default();
        metrics::emit("kafka-sink", kind.as_str(), &[
            ("Received", Unit::Count, received as f64),
            ("Tabled", Unit::Count, r.tabled as f64),
            ("Quarantined", Unit::Count, r.quarantined as f64),
            ("AlreadyPresent", Unit::Count, r.skipped as f64),
            ("GapsOpened", Unit::Count, r.gaps_opened as f64),
            ("LandingBytes", Unit::Bytes, landing_bytes as f64),
            ("CommitLatency", Unit::Milliseconds, started.elapsed().as_secs_f64() * 1e3),
        ]);
        response.tabled += r.tabled;
        response.quarantined += r.quarantined;
        response.already_present += r.skipped;
        response.gaps_opened += r.gaps_opened;
    }
    tracing::info!(received = response.received, tabled = response.tabled, quarantined = response.quarantined,
        already_present = response.already_present, gaps_opened = response.gaps_opened, objects = response.landed_objects.len(), "kafka batch done");
    Ok(response)
}

/// What the Kinesis sink did with one batch; `batchItemFailures` is what Lambda reads
/// (ReportBatchItemFailures): it retries the shard from the lowest sequence number listed.
#[derive(Debug, Default, Serialize)]
pub struct KinesisSinkResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
    pub received: u64,
    pub tabled: u64,
    pub quarantined: u64,
    /// Records at or below a shard's watermark, not written again. Kinesis sequence numbers
    /// are not contiguous, so a record below the watermark that was never written (a replay
    /// after a gap) cannot be told from a redelivery: both are counted here, under this name.
    pub at_or_below_watermark: u64,
    /// Records in `batchItemFailures`, with the reason, for logs and `pinpipe invoke`.
    pub failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Per kind (stream): each shard's records, in sequence-number order.
pub type KinesisSources =
    std::collections::BTreeMap<Kind, Vec<crate::storage::landing::SourceRecords<crate::watermark::SequenceNumber>>>;

/// A Kinesis event's records per kind (stream), each (stream, shard) in sequence-number
/// order as one source (app id `<stream>-<shardId>`), and how many records it held.
pub fn kinesis_sources(event: aws_lambda_events::kinesis::KinesisEvent) -> Result<(u64, KinesisSources)> {
    use std::collections::BTreeMap;

    use crate::storage::landing::SourceRecords;
    use crate::record::Position;
    use crate::watermark::SequenceNumber;

    let mut received = 0;
    // Per (stream, shard): each record's sequence number, its text form and its data.
    type ShardRecords = Vec<(SequenceNumber, String, bytes::Bytes)>;
    let mut groups: BTreeMap<(String, String), ShardRecords> = BTreeMap::new();
    for record in event.records {
        received += 1;
        let stream = record
            .event_source_arn
            .as_deref()
            .and_then(|arn| arn.rsplit_once(":stream/").map(|(_, s)| s.to_string()))
            .ok_or_else(|| crate::Error::Config(format!(
                "Kinesis record {:?} has no eventSourceARN naming its stream", record.event_id)))?;
        let shard = record
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':').map(|(s, _)| s.to_string()))
            .unwrap_or_else(|| "shardId-000000000000".to_string());
        let seq_text = record.kinesis.sequence_number;
        let seq = SequenceNumber::parse(&seq_text)?;
        groups.entry((stream, shard)).or_default().push((seq, seq_text, bytes::Bytes::from(record.kinesis.data.0)));
    }
    let mut by_kind: BTreeMap<Kind, Vec<SourceRecords<SequenceNumber>>> = BTreeMap::new();
    for ((stream, shard), mut records) in groups {
        let kind = Kind::from_source_name(&stream).ok_or_else(|| {
            crate::Error::Config(format!("stream {stream:?} is not a pin, geo or user stream; check the event source mapping"))
        })?;
        records.sort_by_key(|a| a.0);
        let records = records.into_iter().map(|(seq, text, bytes)| (seq, Position::Text(text.into()), bytes));
        by_kind.entry(kind).or_default().push(SourceRecords::from_records(&stream, &shard, records));
    }
    Ok((received, by_kind))
}

/// The Kinesis sink's clients, made once per container: the table handles and the landing.
pub struct KinesisSink {
    pub tables: Tables,
    landing: std::sync::Arc<dyn object_store::ObjectStore>,
}

impl KinesisSink {
    pub async fn open(cfg: &Config) -> Result<Self> {
        let landing = cfg.landing.as_ref().ok_or_else(|| {
            crate::Error::Config("PINPIPE_LANDING (--landing) is not set: the Kinesis sink lands raw batches there (kinesis/)".into())
        })?;
        let mut tables = Tables::open(&cfg.tables, &cfg.id).await?;
        tables.set_shard_idle_hours(cfg.shard_idle_hours);
        Ok(KinesisSink { tables, landing: landing.store()? })
    }

    /// One Kinesis batch: each (stream, shard) landed raw, then cleaned into the stream's
    /// table exactly once (`land_and_write_kinesis`). A kind whose landing or write fails is
    /// reported in `batchItemFailures`, so only its records are retried; the rest of the batch
    /// stays written, and a retry skips whatever an earlier attempt stored.
    pub async fn handle(&mut self, event: aws_lambda_events::kinesis::KinesisEvent) -> Result<KinesisSinkResponse> {
        self.tables.refresh().await?;
        let mut response = KinesisSinkResponse::default();
        let (received, by_kind) = kinesis_sources(event)?;
        response.received = received;
        for (kind, sources) in by_kind {
            let ids: Vec<String> =
                sources.iter().flat_map(|s| s.records.iter().map(|r| r.position.to_string())).collect();
            let started = std::time::Instant::now();
            let written = land_and_write_kinesis(&mut self.tables, &self.landing, kind, sources).await;
            let (tabled, quarantined, below, failed) = match &written {
                Ok(r) => (r.tabled, r.quarantined, r.skipped, 0),
                Err(_) => (0, 0, 0, ids.len() as u64),
            };
            metrics::emit("kinesis-sink", kind.as_str(), &[
                ("Received", Unit::Count, ids.len() as f64),
                ("Tabled", Unit::Count, tabled as f64),
                ("Quarantined", Unit::Count, quarantined as f64),
                ("AtOrBelowWatermark", Unit::Count, below as f64),
                ("Failed", Unit::Count, failed as f64),
                ("CommitLatency", Unit::Milliseconds, started.elapsed().as_secs_f64() * 1e3),
            ]);
            match written {
                Ok(r) => {
                    response.tabled += r.tabled;
                    response.quarantined += r.quarantined;
                    response.at_or_below_watermark += r.skipped;
                }
                Err(e) => {
                    tracing::error!(kind = kind.as_str(), records = ids.len(), error = %e, "kinesis records not stored; reported for retry");
                    response.failed += ids.len() as u64;
                    response.errors.push(format!("{}: {e}", kind.as_str()));
                    response.batch_item_failures.extend(ids.into_iter().map(|item_identifier| BatchItemFailure { item_identifier }));
                }
            }
        }
        tracing::info!(received = response.received, tabled = response.tabled, quarantined = response.quarantined,
            at_or_below_watermark = response.at_or_below_watermark, failed = response.failed, "kinesis batch done");
        Ok(response)
    }
}

/// Lands each shard's records above its watermark under `kinesis/` (a forgotten post's as a
/// position without a record), then tables everything the shard's landing holds above the
/// watermark, in position order: this batch, and any earlier delivery that was landed but
/// not tabled (a batch the mapping gave up on after landing it). So the watermark never
/// passes a landed record that is not in the tables, which is what lets a replay decide by
/// position alone (`storage::kinesis_landing`).
pub async fn land_and_write_kinesis(
    tables: &mut Tables,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    kind: Kind,
    sources: Vec<crate::storage::landing::SourceRecords<crate::watermark::SequenceNumber>>,
) -> Result<WriteReport> {
    use crate::storage::kinesis_landing as kl;
    use crate::storage::landing::SourceRecords;
    use crate::watermark::SequenceNumber;
    let mut out = Vec::new();
    let mut redelivered = 0u64;
    for src in sources {
        let Some(first) = src.records.first() else { continue };
        let (stream, shard) = (first.source.clone(), first.partition.clone());
        let mark: Option<SequenceNumber> = tables.mark(kind, &src.app_id).await?;
        let fresh: Vec<(SequenceNumber, &crate::record::RawRecord)> =
            src.offsets.iter().zip(&src.records).filter(|(s, _)| mark.is_none_or(|m| **s > m)).map(|(s, r)| (*s, r)).collect();
        redelivered += (src.records.len() - fresh.len()) as u64;
        let lines: Vec<(SequenceNumber, Option<&[u8]>)> =
            fresh.iter().map(|(s, r)| (*s, (!tables.is_forgotten(kind, &r.bytes)).then_some(r.bytes.as_ref()))).collect();
        let own = kl::write(store, &stream, &shard, &lines).await?;
        // Everything landed past the watermark, this batch's object from memory.
        let mut positions: std::collections::BTreeMap<SequenceNumber, Option<bytes::Bytes>> = Default::default();
        // Objects this call did not write are read whole (one an earlier, longer delivery left
        // may reach past this batch): the watermark must not stop inside an object, or the
        // rest of it would sit below the next batch untabled.
        for (first, _) in kl::extents_after(store, &stream, &shard, mark.as_ref()).await? {
            let key = kl::object_key(&stream, &shard, &first);
            if own.written.contains(&key) {
                continue;
            }
            if !own.found.contains(&key) {
                tracing::warn!(object = %key, "tabling a landed Kinesis delivery that was never tabled");
            }
            match kl::read(store, &key).await {
                Ok(read) => {
                    for (s, b) in read {
                        positions.entry(s).or_insert(b);
                    }
                }
                // Expired by the bucket's lifecycle before anything tabled it: nothing left to read.
                Err(crate::Error::Storage { source: object_store::Error::NotFound { .. }, .. }) => {
                    tracing::error!(object = %key, "a landed Kinesis delivery expired before it was tabled; its records are lost");
                }
                Err(e) => return Err(e),
            }
        }
        for (s, r) in fresh {
            positions.insert(s, Some(r.bytes.clone()));
        }
        let mut records = SourceRecords::new(src.app_id.clone());
        kl::push_all(&mut records, &stream, &shard, positions.into_iter().collect());
        out.push(records);
    }
    let mut report = tables.write(kind, out).await?;
    report.received += redelivered;
    report.skipped += redelivered;
    Ok(report)
}
