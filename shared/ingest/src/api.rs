//! The routes of contract §2. Every record of a request is validated before anything is sent, so
//! a refused request (4xx) stored nothing and the client can fix it and retry without
//! creating duplicates; a 200 lists each record's own result.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use pinpipe_model::record::invalid_reason;
use pinpipe_model::Kind;
use lambda_http::request::{LambdaRequest, RequestContext, RequestOrigin};
use lambda_http::{http, Body, Request, RequestExt, Response};

use crate::error::Error;

use crate::config::IngestConfig;
use crate::json::compact;
use crate::kafka::{KafkaProducer, OutRecord, Outcome};
use crate::kinesis::{KinesisProducer, PutError, PutOutcome};

/// API Gateway's Lambda payload limit.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Kafka's and Kinesis's usual per-record limit.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// PutRecords' limit, used for both APIs.
pub const MAX_RECORDS: usize = 500;

pub const KAFKA_MEDIA_TYPE: &str = "application/vnd.kafka.v2+json";

/// An HTTP reply: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn kafka(status: u16, body: Value) -> Self {
        Reply { status, content_type: KAFKA_MEDIA_TYPE, body: body.to_string() }
    }
    fn kafka_error(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self::kafka(status, json!({"error_code": code, "message": message.into()}))
    }
    fn kinesis(status: u16, body: Value) -> Self {
        Reply { status, content_type: "application/json", body: body.to_string() }
    }
    fn kinesis_error(status: u16, kind: &str, message: impl Into<String>) -> Self {
        Self::kinesis(status, json!({"__type": kind, "message": message.into()}))
    }
}

/// The ingest API with its producers, built once per container.
pub struct Ingest {
    pub cfg: IngestConfig,
    pub kafka: Option<KafkaProducer>,
    pub kinesis: Option<KinesisProducer>,
}

/// Which API a path belongs to: requests through API Gateway may carry a stage prefix.
enum Route<'a> {
    Topics,
    Topic(&'a str),
    Streams,
    Stream(&'a str),
    StreamRecord(&'a str),
    StreamRecords(&'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    let path = path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segs.iter().position(|s| *s == "topics" || *s == "streams");
    let Some(start) = start else { return Route::Unknown };
    match &segs[start..] {
        ["topics"] => Route::Topics,
        ["topics", t] => Route::Topic(t),
        ["streams"] => Route::Streams,
        ["streams", s] => Route::Stream(s),
        ["streams", s, "record"] => Route::StreamRecord(s),
        ["streams", s, "records"] => Route::StreamRecords(s),
        _ => Route::Unknown,
    }
}

#[derive(Deserialize)]
struct ProduceBody<'a> {
    #[serde(borrow)]
    records: Vec<ProduceRecord<'a>>,
}

#[derive(Deserialize)]
struct ProduceRecord<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    key: Option<&'a RawValue>,
    #[serde(default)]
    partition: Option<i32>,
}

#[derive(Deserialize)]
struct PutRecordBody<'a> {
    #[serde(borrow, rename = "Data", alias = "data")]
    data: Option<&'a RawValue>,
    #[serde(rename = "PartitionKey", alias = "partition-key", alias = "partitionKey", default)]
    partition_key: Option<Value>,
}

#[derive(Deserialize)]
struct PutRecordsBody<'a> {
    #[serde(borrow, alias = "Records")]
    records: Vec<PutRecordBody<'a>>,
}

/// Why a request was refused before anything was sent.
struct Refusal {
    status: u16,
    message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal { status, message: message.into() }
}

/// A record value checked against its kind's rules (contract §2), compacted for storage.
fn checked_value(kind: Kind, i: usize, raw: Option<&RawValue>) -> Result<Vec<u8>, Refusal> {
    let raw = raw.filter(|r| r.get() != "null").ok_or_else(|| refuse(422, format!("record {i}: no value")))?;
    let value = compact(raw.get());
    if value.len() > MAX_RECORD_BYTES {
        return Err(refuse(413, format!("record {i} is {} bytes; the limit is {MAX_RECORD_BYTES}", value.len())));
    }
    if let Some(reason) = invalid_reason(kind, &value) {
        return Err(refuse(422, format!("record {i} is not a valid {} record: {reason}", kind.as_str())));
    }
    Ok(value)
}

/// contract §2's body limit, the same for both APIs.
fn check_body_size(len: usize) -> Result<(), Refusal> {
    if len > MAX_BODY_BYTES {
        return Err(refuse(413, format!("body is {len} bytes; the limit is {MAX_BODY_BYTES}")));
    }
    Ok(())
}

/// contract §2's records-per-request limit, the same for both APIs; an empty list is refused too.
fn check_record_count(n: usize) -> Result<(), Refusal> {
    if n > MAX_RECORDS {
        return Err(refuse(413, format!("{n} records; the limit is {MAX_RECORDS} per request")));
    }
    if n == 0 {
        return Err(refuse(422, "records is empty"));
    }
    Ok(())
}

fn media_type(content_type: Option<&str>) -> String {
    content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl Ingest {
    /// Builds the producers the configuration asks for.
    pub async fn new(cfg: IngestConfig) -> Result<Self, Error> {
        let kafka = match &cfg.kafka_brokers {
            Some(b) => Some(KafkaProducer::new(&cfg, b)?),
            None => None,
        };
        let kinesis = if cfg.kinesis { Some(KinesisProducer::new(cfg.produce_timeout, cfg.kinesis_endpoint.as_deref()).await) } else { None };
        Ok(Ingest { cfg, kafka, kinesis })
    }

    fn topic_kind(&self, topic: &str) -> Option<Kind> {
        self.cfg.topics.iter().find(|(n, _)| n == topic).map(|(_, k)| *k)
    }

    fn stream_kind(&self, stream: &str) -> Option<Kind> {
        self.cfg.streams.iter().find(|(n, _)| n == stream).map(|(_, k)| *k)
    }

    /// One request. `content_type` is the request's Content-Type header.
    pub async fn handle(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let started = std::time::Instant::now();
        let reply = self.dispatch(method, path, content_type, body).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        // Per request at debug level: on the most-invoked function an info line per request is
        // most of the log bill, and API Gateway's access log already has method, path, status
        // and latency. A server error stays visible.
        if reply.status >= 500 {
            tracing::warn!(method, path, status = reply.status, bytes = body.len(), ms, "request failed");
        } else {
            tracing::debug!(method, path, status = reply.status, bytes = body.len(), ms, "request");
        }
        let r = route(path);
        let kind = match r {
            Route::Topic(t) => self.topic_kind(t),
            Route::Stream(s) | Route::StreamRecord(s) | Route::StreamRecords(s) => self.stream_kind(s),
            _ => None,
        };
        // Writes the API accepted, per transport: the template's SinkSilent alarms compare them
        // with what each sink received, so a mapping that stopped invoking its sink is noticed.
        let accepted = reply.status == 200 && method != "GET";
        let to_kafka = accepted && matches!(r, Route::Topic(_));
        let to_kinesis = accepted && matches!(r, Route::StreamRecord(_) | Route::StreamRecords(_));
        use pinpipe_model::metrics::{emit, Unit};
        emit("ingest-api", kind.map_or("none", |k| k.as_str()), &[
            ("Requests", Unit::Count, 1.0),
            ("KafkaAccepted", Unit::Count, f64::from(u8::from(to_kafka))),
            ("KinesisAccepted", Unit::Count, f64::from(u8::from(to_kinesis))),
            ("ClientErrors", Unit::Count, f64::from(u8::from((400..500).contains(&reply.status)))),
            ("ServerErrors", Unit::Count, f64::from(u8::from(reply.status >= 500))),
            ("RequestBytes", Unit::Bytes, body.len() as f64),
            ("Latency", Unit::Milliseconds, ms),
        ]);
        reply
    }

    async fn dispatch(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        match (method, route(path)) {
            ("GET", Route::Topics) => {
                Reply::kafka(200, json!(self.cfg.topics.iter().map(|(n, _)| n).collect::<Vec<_>>()))
            }
            ("GET", Route::Topic(t)) => self.describe_topic(t).await,
            ("POST", Route::Topic(t)) => self.produce(t, content_type, body).await,
            ("GET", Route::Streams) => Reply::kinesis(
                200,
                json!({"StreamNames": self.cfg.streams.iter().map(|(n, _)| n).collect::<Vec<_>>(), "HasMoreStreams": false}),
            ),
            ("GET", Route::Stream(s)) => self.describe_stream(s).await,
            ("PUT" | "POST", Route::StreamRecord(s)) => self.put_record(s, content_type, body).await,
            ("PUT" | "POST", Route::StreamRecords(s)) => self.put_records(s, content_type, body).await,
            (_, Route::Topics | Route::Topic(_)) => Reply::kafka_error(405, 40501, format!("{method} is not allowed on {path}")),
            (_, Route::Unknown) => Reply::kafka_error(404, 404, format!("HTTP 404 Not Found: {path}")),
            (_, _) => Reply::kinesis_error(405, "MethodNotAllowed", format!("{method} is not allowed on {path}")),
        }
    }

    async fn describe_topic(&self, topic: &str) -> Reply {
        if self.topic_kind(topic).is_none() {
            return Reply::kafka_error(404, 40401, format!("Topic {topic} not found."));
        }
        let Some(kafka) = &self.kafka else { return no_kafka() };
        match kafka.partitions(topic).await {
            Ok(parts) => Reply::kafka(200, json!({"name": topic, "configs": {},
                "partitions": parts.iter().map(|p| json!({"partition": p})).collect::<Vec<_>>()})),
            Err(e) => Reply::kafka_error(503, 50301, format!("cannot read topic {topic} from the brokers: {e}")),
        }
    }

    /// POST /topics/{topic}: the REST proxy's produce.
    async fn produce(&self, topic: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let Some(kind) = self.topic_kind(topic) else {
            return Reply::kafka_error(404, 40401, format!("Topic {topic} not found."));
        };
        let media = media_type(content_type);
        if !matches!(media.as_str(), "application/vnd.kafka.json.v2+json" | "application/json") {
            return Reply::kafka_error(415, 41501, format!(
                "HTTP 415 Unsupported Media Type {media:?}: send Content-Type: application/vnd.kafka.json.v2+json"));
        }
        let values = match parse_produce(kind, body) {
            Ok(v) => v,
            Err(r) => return Reply::kafka_error(r.status, r.status as u32 * 100 + 1, r.message),
        };
        let Some(kafka) = &self.kafka else { return no_kafka() };
        let records: Vec<OutRecord<'_>> =
            values.iter().map(|(key, partition, value)| OutRecord { key: key.as_deref(), partition: *partition, value }).collect();
        let outcomes = kafka.send(topic, &records).await;
        if !outcomes.iter().any(|o| matches!(o, Outcome::Stored { .. })) {
            let why = outcomes.iter().find_map(|o| match o { Outcome::Failed { message, .. } => Some(message.clone()), _ => None });
            return Reply::kafka_error(503, 50301, format!(
                "Kafka did not store any record (nothing stored; retry the request): {}", why.unwrap_or_default()));
        }
        Reply { status: 200, content_type: KAFKA_MEDIA_TYPE, body: produce_reply(&outcomes) }
    }

    async fn describe_stream(&self, stream: &str) -> Reply {
        if self.stream_kind(stream).is_none() {
            return not_found_stream(stream);
        }
        let Some(kinesis) = &self.kinesis else { return no_kinesis() };
        match kinesis.describe(stream).await {
            Ok((status, shards)) => Reply::kinesis(200, json!({"StreamDescriptionSummary":
                {"StreamName": stream, "StreamStatus": status, "OpenShardCount": shards}})),
            Err(e) => put_error(e),
        }
    }

    /// PUT /streams/{stream}/record: PutRecord, `Data` stored as its compact JSON.
    async fn put_record(&self, stream: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let (_, (data, key)) = match self.stream_request(stream, content_type, body, |kind, body| {
            let rec: PutRecordBody<'_> = serde_json::from_slice(body)
                .map_err(|e| refuse(422, format!("body must be {{\"StreamName\",\"Data\",\"PartitionKey\"}}: {e}")))?;
            checked_put(kind, 0, &rec)
        }) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(kinesis) = &self.kinesis else { return no_kinesis() };
        match kinesis.put_record(stream, data, &key).await {
            Ok(PutOutcome::Stored { sequence_number, shard_id }) => {
                Reply::kinesis(200, json!({"SequenceNumber": sequence_number, "ShardId": shard_id}))
            }
            Ok(PutOutcome::Failed { code, message }) => Reply::kinesis_error(503, &code, message),
            Err(e) => put_error(e),
        }
    }

    /// PUT /streams/{stream}/records: PutRecords, with Kinesis's per-record reply.
    async fn put_records(&self, stream: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let (_, parsed) = match self.stream_request(stream, content_type, body, |kind, body| {
            let req: PutRecordsBody<'_> = serde_json::from_slice(body)
                .map_err(|e| refuse(422, format!("body must be {{\"records\":[{{\"data\",\"partition-key\"}}]}}: {e}")))?;
            check_record_count(req.records.len())?;
            req.records.iter().enumerate().map(|(i, r)| checked_put(kind, i, r)).collect()
        }) {
            Ok(v) => v,
            Err(r) => return r,
        };
        let Some(kinesis) = &self.kinesis else { return no_kinesis() };
        match kinesis.put_records(stream, parsed).await {
            Ok(outcomes) => {
                let failed = outcomes.iter().filter(|o| matches!(o, PutOutcome::Failed { .. })).count();
                let records: Vec<Value> = outcomes
                    .into_iter()
                    .map(|o| match o {
                        PutOutcome::Stored { sequence_number, shard_id } => json!({"SequenceNumber": sequence_number, "ShardId": shard_id}),
                        PutOutcome::Failed { code, message } => json!({"ErrorCode": code, "ErrorMessage": message}),
                    })
                    .collect();
                Reply::kinesis(200, json!({"FailedRecordCount": failed, "Records": records}))
            }
            Err(e) => put_error(e),
        }
    }

    /// Checks shared by the Kinesis writes: stream, media type, size, then `parse`.
    fn stream_request<T>(
        &self,
        stream: &str,
        content_type: Option<&str>,
        body: &[u8],
        parse: impl FnOnce(Kind, &[u8]) -> Result<T, Refusal>,
    ) -> Result<(Kind, T), Reply> {
        let kind = self.stream_kind(stream).ok_or_else(|| not_found_stream(stream))?;
        let media = media_type(content_type);
        if !(media.is_empty() || media == "application/json" || media.starts_with("application/x-amz-json")) {
            return Err(Reply::kinesis_error(415, "UnsupportedMediaType",
                format!("Content-Type {media:?} is not JSON: send Content-Type: application/json")));
        }
        check_body_size(body.len()).and_then(|()| parse(kind, body)).map(|v| (kind, v)).map_err(|r| {
            let kind = if r.status == 413 { "RequestEntityTooLarge" } else { "InvalidArgumentException" };
            Reply::kinesis_error(r.status, kind, r.message)
        })
    }
}

/// Parses and checks a produce body: (key, partition, value) per record.
#[allow(clippy::type_complexity)]
fn parse_produce(kind: Kind, body: &[u8]) -> Result<Vec<(Option<Vec<u8>>, Option<i32>, Vec<u8>)>, Refusal> {
    check_body_size(body.len())?;
    let req: ProduceBody<'_> = serde_json::from_slice(body)
        .map_err(|e| refuse(422, format!("body must be {{\"records\":[{{\"value\":{{...}}}}]}}: {e}")))?;
    check_record_count(req.records.len())?;
    req.records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let value = checked_value(kind, i, r.value)?;
            let key = r.key.filter(|k| k.get() != "null").map(|k| compact(k.get()));
            Ok((key, r.partition, value))
        })
        .collect()
}

fn checked_put(kind: Kind, i: usize, rec: &PutRecordBody<'_>) -> Result<(Vec<u8>, String), Refusal> {
    let data = checked_value(kind, i, rec.data)?;
    let key = match &rec.partition_key {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(refuse(422, format!("record {i}: PartitionKey must be a string of 1 to 256 characters"))),
    };
    Ok((data, key))
}

/// The REST proxy's produce reply, one entry per record in request order. Written directly:
/// building a `serde_json::Value` per record was a tenth of the server's time.
pub(crate) fn produce_reply(outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(24 + outcomes.len() * 64);
    out.push_str("{\"offsets\":[");
    for (i, o) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match o {
            Outcome::Stored { partition, offset } => {
                let _ = write!(out, "{{\"partition\":{partition},\"offset\":{offset},\"error_code\":null,\"error\":null}}");
            }
            Outcome::Failed { retriable, message } => {
                let code = if *retriable { 50003 } else { 50002 };
                let message = Value::String(message.clone());
                let _ = write!(out, "{{\"partition\":null,\"offset\":null,\"error_code\":{code},\"error\":{message}}}");
            }
        }
    }
    out.push_str("],\"key_schema_id\":null,\"value_schema_id\":null}");
    out
}

/// A client's view of a 200 reply from this API: indexes (into the request's `n` records)
/// that were not stored and may be retried. `kinesis`: a PutRecords (`Records`) or PutRecord
/// reply, else the REST proxy's produce reply. Only the fields that tell are read (typed,
/// borrowed); an unreadable reply counts every record as not stored.
pub fn unstored_records(kinesis: bool, n: usize, body: &[u8]) -> Vec<usize> {
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(default, borrow)]
        error_code: Option<&'a RawValue>,
        #[serde(rename = "SequenceNumber", default)]
        sequence_number: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct ReplyBody<'a> {
        #[serde(default, borrow)]
        offsets: Option<Vec<Entry<'a>>>,
        #[serde(rename = "Records", default, borrow)]
        records: Option<Vec<Entry<'a>>>,
        #[serde(rename = "SequenceNumber", default)]
        sequence_number: Option<String>,
    }
    let Ok(reply) = serde_json::from_slice::<ReplyBody<'_>>(body) else { return (0..n).collect() };
    let stored = |e: &Entry<'_>| match kinesis {
        false => e.error_code.is_none_or(|c| c.get() == "null"),
        true => e.sequence_number.is_some(),
    };
    let entries = match (kinesis, reply.records, n) {
        (false, _, _) => reply.offsets,
        (true, Some(records), _) => Some(records),
        (true, None, 1) => return if reply.sequence_number.is_some() { vec![] } else { vec![0] },
        (true, None, _) => None,
    };
    match entries {
        Some(list) => (0..n).filter(|i| list.get(*i).is_none_or(|e| !stored(e))).collect(),
        None => (0..n).collect(),
    }
}

fn no_kafka() -> Reply {
    Reply::kafka_error(503, 50302, "no Kafka brokers configured: set PINPIPE_KAFKA_BROKERS (pinpipe serve --kafka)")
}

fn no_kinesis() -> Reply {
    Reply::kinesis_error(503, "ServiceUnavailable", "Kinesis is turned off here (PINPIPE_KINESIS=off)")
}

fn not_found_stream(stream: &str) -> Reply {
    Reply::kinesis_error(404, "ResourceNotFoundException", format!("Stream {stream} not found."))
}

fn put_error(e: PutError) -> Reply {
    match e {
        PutError::NotFound(m) => Reply::kinesis_error(404, "ResourceNotFoundException", m),
        PutError::Unavailable(m) => Reply::kinesis_error(503, "ServiceUnavailable", format!("nothing stored; retry: {m}")),
        PutError::Refused { code, message } => Reply::kinesis_error(503, &code, format!("nothing stored; retry: {message}")),
    }
}

impl Reply {
    /// A body over the limit, refused before it was read whole (`pinpipe serve`).
    pub fn too_large(path: &str) -> Reply {
        let message = format!("body is over the {MAX_BODY_BYTES}-byte limit");
        match route(path) {
            Route::Stream(_) | Route::StreamRecord(_) | Route::StreamRecords(_) | Route::Streams => {
                Reply::kinesis_error(413, "RequestEntityTooLarge", message)
            }
            _ => Reply::kafka_error(413, 41301, message),
        }
    }
}

impl Reply {
    /// The reply as lambda_http's response (it encodes it for whichever service called).
    pub fn to_response(&self) -> Response<Body> {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.status_mut() = http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(self.content_type));
        resp
    }
}

impl Ingest {
    /// One event as lambda_http delivers it: an HTTP request (API Gateway REST API, HTTP API or
    /// a Function URL, all with the same routes and replies) or, passed through, a request of
    /// the stack's `Custom::KafkaTopics` resource (crate::topics). Err only for an event that
    /// is neither, or a custom-resource answer that could not be delivered.
    pub async fn handle_http(&self, req: Request) -> Result<Response<Body>, Error> {
        if matches!(req.request_context_ref(), Some(RequestContext::PassThrough)) {
            let event: Value = serde_json::from_slice(req.body()).map_err(|e| Error::Event(e.to_string()))?;
            if !crate::topics::is_custom_resource_event(&event) {
                return Err(Error::Event("it has no httpMethod, requestContext.http or RequestType".into()));
            }
            let answer = crate::topics::handle_custom_resource(&self.cfg, &event).await?;
            let mut resp = Response::new(Body::from(answer.to_string()));
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            return Ok(resp);
        }
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        Ok(self.handle(req.method().as_str(), req.raw_http_path(), content_type, req.body()).await.to_response())
    }

    /// Any event as JSON (`pinpipe invoke ingest-api` and the tests): read as lambda_http
    /// reads it, through `handle_http`, and answered as an API Gateway proxy integration (or,
    /// for a custom-resource request, with the answer sent to CloudFormation).
    /// A hand-written REST event may leave out `requestContext` (API Gateway always sends it);
    /// it is read as one that names the request's method.
    pub async fn handle_lambda_event(&self, event: &Value) -> Result<Value, Error> {
        let mut event = event.clone();
        if let Some(obj) = event.as_object_mut() {
            if let Some(method) = obj.get("httpMethod").cloned() {
                obj.entry("requestContext").or_insert_with(|| json!({ "httpMethod": method }));
            }
        }
        let req: LambdaRequest = serde_json::from_value(event).map_err(|e| Error::Event(e.to_string()))?;
        let passed_through = matches!(req.request_origin(), RequestOrigin::PassThrough);
        let resp = self.handle_http(Request::from(req)).await?;
        if passed_through {
            return serde_json::from_slice(resp.body()).map_err(|e| Error::Event(e.to_string()));
        }
        let content_type = resp.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        Ok(json!({"statusCode": resp.status().as_u16(), "headers": {"content-type": content_type},
                  "body": String::from_utf8_lossy(resp.body()), "isBase64Encoded": false}))
    }
}
