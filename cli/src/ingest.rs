//! `pinpipe serve` (the ingest API as a local HTTP server), `pinpipe emulate` (the user-posting
//! emulator that replaces the old scripts) and `pinpipe kafka-mock` (a local Kafka broker).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::{Kind, PipelineId};
use pinpipe_ingest::api::MAX_BODY_BYTES;
use pinpipe_ingest::{Ingest, IngestConfig, Reply};

use crate::ui;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Kafka bootstrap servers (without it the Kafka routes answer 503).
    #[arg(long, env = "PINPIPE_KAFKA_BROKERS")]
    pub kafka: Option<String>,
    /// Kafka authentication: msk-iam is TLS + SASL OAUTHBEARER with the default AWS credentials.
    #[arg(long, value_enum, env = "PINPIPE_KAFKA_AUTH", default_value = "plaintext")]
    pub kafka_auth: KafkaAuthArg,
    /// Kinesis, as in `consume`: on (endpoint from AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL),
    /// an endpoint URL, or off (the Kinesis routes answer 503).
    #[arg(long, env = "PINPIPE_KINESIS", default_value = "on", value_name = "on|off|ENDPOINT")]
    pub kinesis: String,
    /// Longest a request waits for the broker or Kinesis before answering 503.
    #[arg(long, env = "PINPIPE_PRODUCE_TIMEOUT_MS", default_value_t = 10_000)]
    pub produce_timeout_ms: u64,
    /// How long the producer waits to put records of concurrent requests into one
    /// ProduceRequest (adds at most this to each reply; 0 measured fastest on one host).
    #[arg(long, env = "PINPIPE_KAFKA_LINGER_MS", default_value_t = pinpipe_ingest::config::DEFAULT_LINGER_MS)]
    pub kafka_linger_ms: u32,
}

/// `--kafka-auth` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KafkaAuthArg {
    Plaintext,
    MskIam,
}

impl KafkaAuthArg {
    fn as_str(self) -> &'static str {
        match self {
            KafkaAuthArg::Plaintext => "plaintext",
            KafkaAuthArg::MskIam => "msk-iam",
        }
    }
}

impl ServeArgs {
    pub fn config(&self, id: &PipelineId) -> Result<IngestConfig> {
        let (id, kafka, auth, kinesis, timeout, linger) = (
            id.as_str().to_string(),
            self.kafka.clone(),
            self.kafka_auth.as_str().to_string(),
            self.kinesis.clone(),
            self.produce_timeout_ms,
            self.kafka_linger_ms,
        );
        Ok(IngestConfig::from_lookup(move |k| match k {
            "PINPIPE_ID" => Some(id.clone()),
            "PINPIPE_KAFKA_BROKERS" => kafka.clone(),
            "PINPIPE_KAFKA_AUTH" => Some(auth.clone()),
            "PINPIPE_KINESIS" => Some(kinesis.clone()),
            "PINPIPE_PRODUCE_TIMEOUT_MS" => Some(timeout.to_string()),
            "PINPIPE_KAFKA_LINGER_MS" => Some(linger.to_string()),
            other => std::env::var(other).ok().filter(|v| !v.is_empty()),
        })?)
    }
}

/// Runs the ingest API until Ctrl-C or SIGTERM.
pub async fn serve(id: &PipelineId, a: ServeArgs) -> Result<()> {
    let ingest = Arc::new(Ingest::new(a.config(id)?).await?);
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("pinpipe ingest API on http://{addr} (kafka: {}, kinesis: {})",
        a.kafka.as_deref().unwrap_or("off"), if ingest.kinesis.is_some() { "on" } else { "off" });
    let server = tokio::spawn(serve_on(listener, ingest.clone()));
    shutdown_signal().await;
    server.abort();
    if let Some(k) = &ingest.kafka {
        k.flush();
    }
    eprintln!("pinpipe serve: stopped");
    Ok(())
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Serves HTTP/1.1 connections on `listener` with the same handler as the Lambda.
pub async fn serve_on(listener: tokio::net::TcpListener, ingest: Arc<Ingest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let ingest = ingest.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&ingest, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

async fn respond(ingest: &Ingest, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let reply = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => ingest.handle(parts.method.as_str(), &path, content_type.as_deref(), &b.to_bytes()).await,
        Err(_) => Reply::too_large(&path),
    };
    hyper::Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Kafka REST proxy: POST /topics/<ID>.<kind>.
    Batch,
    /// Kinesis proxy: PUT /streams/streaming-<ID>-<kind>/record (or /records).
    Stream,
}

#[derive(Args, Clone)]
pub struct EmulateArgs {
    /// Base URL of the ingest API (pinpipe serve, or the API Gateway stage URL).
    #[arg(long)]
    pub api: String,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// A `pinpipe generate` directory to read posts from.
    #[arg(long, conflicts_with = "rows", required_unless_present = "rows")]
    pub source: Option<PathBuf>,
    /// Generate N posts in memory instead (up to 200,000 are made before sending starts, so
    /// the timing is the API's alone; more are made while sending).
    #[arg(long = "posts", visible_alias = "rows", value_name = "N")]
    pub rows: Option<u64>,
    /// Seed for --posts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send only the first N posts (default: all).
    #[arg(long)]
    pub count: Option<u64>,
    /// Posts per second at most (default: as fast as the API answers).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Posts per request (1 = one record per request, as the old scripts did).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// API key, sent as the `x-api-key` header (API Gateway usage plans).
    #[arg(long, env = "PINPIPE_API_KEY")]
    pub api_key: Option<String>,
    /// Sign every request with SigV4 for service execute-api (a deployed API with ApiAuth=iam),
    /// with the default AWS credentials (environment, profile, role) and AWS_REGION.
    #[arg(long, env = "PINPIPE_API_SIGV4")]
    pub sigv4: bool,
    /// Attempts per record on 503, connection errors or per-record errors.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// Skip the first N posts of the source (to send distinct posts in two runs).
    #[arg(long, default_value_t = 0)]
    pub skip: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Where posts come from: three records (pin, geo, user) per post.
enum Posts {
    Files([Vec<Bytes>; 3]),
    /// Generated rows `skip..`, made before sending.
    Pregenerated { skip: u64, files: [Vec<Bytes>; 3] },
    Generated(GenConfig),
}

impl Posts {
    fn len(&self) -> u64 {
        match self {
            Posts::Files(f) => f[0].len() as u64,
            Posts::Pregenerated { skip, files } => skip + files[0].len() as u64,
            Posts::Generated(cfg) => cfg.total_rows(),
        }
    }
    /// Post `t`'s pin, geo and user records, borrowed when they are at hand: cloning `Bytes`
    /// that share one buffer made every request bump one refcount from every worker thread.
    fn post(&self, t: u64) -> [Cow<'_, [u8]>; 3] {
        fn borrow(f: &[Vec<Bytes>; 3], i: usize) -> [Cow<'_, [u8]>; 3] {
            [0, 1, 2].map(|k| Cow::Borrowed(f[k][i].as_ref()))
        }
        match self {
            Posts::Files(f) => borrow(f, t as usize),
            Posts::Pregenerated { skip, files } => borrow(files, (t - skip) as usize),
            Posts::Generated(cfg) => generate::post_records(cfg.seed, cfg.post_at(t)).map(Cow::Owned),
        }
    }
}

/// Generated posts up to this many are made before the clock starts, as a posting script has
/// its data at hand; beyond it (about 200 MB of JSON) they are made while sending.
const PREGENERATE_POSTS: u64 = 200_000;

fn load_posts(a: &EmulateArgs) -> Result<Posts> {
    if let Some(rows) = a.rows {
        let cfg = GenConfig { posts: rows, seed: a.seed, duplicates: 0.0 };
        let wanted = a.count.map_or(rows, |c| c.min(rows)).min(cfg.total_rows().saturating_sub(a.skip));
        if wanted > PREGENERATE_POSTS {
            return Ok(Posts::Generated(cfg));
        }
        // Rows skip..skip+wanted, at the same indexes `Posts::post` would make them.
        let files = generate::block(&cfg, a.skip, a.skip + wanted).map(|buf| jsonl_records(Bytes::from(buf)));
        return Ok(Posts::Pregenerated { skip: a.skip, files });
    }
    let dir = a.source.as_ref().context("give --source DIR or --posts N")?;
    let mut files: [Vec<Bytes>; 3] = Default::default();
    for (kind, out) in Kind::ALL.iter().zip(files.iter_mut()) {
        let path = dir.join(format!("{}.jsonl", kind.as_str()));
        let text = std::fs::read(&path).with_context(|| format!("reading {} (a `pinpipe generate` directory)", path.display()))?;
        *out = jsonl_records(Bytes::from(text));
    }
    if files[0].len() != files[1].len() || files[0].len() != files[2].len() {
        bail!("{}: pin.jsonl, geo.jsonl and user.jsonl have different line counts", dir.display());
    }
    Ok(Posts::Files(files))
}

/// The non-empty lines of JSON Lines text, each a view into `buf` (no copy).
fn jsonl_records(buf: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &buf).chain([buf.len()]) {
        if end > start {
            out.push(buf.slice(start..end));
        }
        start = end + 1;
    }
    out
}

/// What an emulation run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EmulateReport {
    pub posts: u64,
    pub records_stored: u64,
    pub requests: u64,
    pub statuses: BTreeMap<String, u64>,
    pub latencies_ms: Vec<f64>,
    pub retried_records: u64,
    /// Records the API refused (4xx): not retried.
    pub refused: u64,
    /// Records still not stored after every attempt.
    pub given_up: u64,
    pub seconds: f64,
    /// CPU time this process used while sending (the posts were made before).
    pub cpu_seconds: f64,
}

impl EmulateReport {
    pub fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return 0.0;
        }
        v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
    }

    pub fn print_json(&self) {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("latencies_ms");
            o.insert("p50_ms".into(), self.percentile(50.0).into());
            o.insert("p90_ms".into(), self.percentile(90.0).into());
            o.insert("p99_ms".into(), self.percentile(99.0).into());
        }
        println!("{v}");
    }

    pub fn print(&self) {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!(
            "emulate: {} posts, {} records stored in {:.2} s ({:.0} posts/s)",
            self.posts, self.records_stored, self.seconds, self.posts as f64 / self.seconds.max(1e-9)
        );
        println!(
            "requests: {} ({}); latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            self.requests, statuses.join(", "), self.percentile(50.0), self.percentile(90.0), self.percentile(99.0)
        );
        println!("retried records: {}; refused: {}; not stored after retries: {}", self.retried_records, self.refused, self.given_up);
    }
}

/// SigV4 signing for API Gateway's IAM authorization: the credentials provider is built once
/// (it caches and refreshes), each request is signed just before it is sent.
struct Signer {
    credentials: aws_credential_types::provider::SharedCredentialsProvider,
    region: String,
}

impl Signer {
    async fn from_env() -> Result<Signer> {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = conf.region().map(|r| r.to_string()).context("--sigv4 needs a region: set AWS_REGION")?;
        let credentials = conf
            .credentials_provider()
            .context("--sigv4 found no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")?;
        Ok(Signer { credentials, region })
    }

    async fn sign(&self, req: &mut reqwest::Request) -> Result<()> {
        use aws_credential_types::provider::ProvideCredentials;
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = self.credentials.provide_credentials().await.context("--sigv4: reading AWS credentials")?.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("--sigv4: signing parameters")?
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = req.body().and_then(|b| b.as_bytes()).unwrap_or(&[]);
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.url().as_str(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .context("--sigv4: the request cannot be signed")?;
        let (instructions, _) = sign(signable, &params).context("--sigv4: signing")?.into_parts();
        for (name, value) in instructions.headers() {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
                reqwest::header::HeaderValue::from_str(value)?,
            );
        }
        Ok(())
    }
}

struct Shared {
    client: reqwest::Client,
    base: String,
    api_key: Option<String>,
    signer: Option<Signer>,
    mode: Mode,
    id: PipelineId,
    retries: u32,
    report: Mutex<EmulateReport>,
}

/// Sends posts the way the old emulation scripts did, with retries that cannot duplicate:
/// the API stores nothing of a request it answers 503, and a 200 names each failed record.
pub async fn emulate(id: &PipelineId, a: EmulateArgs) -> Result<EmulateReport> {
    let posts = Arc::new(load_posts(&a)?);
    let available = posts.len().saturating_sub(a.skip);
    let count = a.count.map_or(available, |c| c.min(available));
    let batch = a.batch_size.clamp(1, 500) as u64;
    let groups = count.div_ceil(batch);
    let shared = Arc::new(Shared {
        client: reqwest::Client::builder().pool_max_idle_per_host(a.concurrency.max(1)).build()?,
        base: a.api.trim_end_matches('/').to_string(),
        api_key: a.api_key.clone(),
        signer: if a.sigv4 { Some(Signer::from_env().await?) } else { None },
        mode: a.mode,
        id: id.clone(),
        retries: a.retries.max(1),
        report: Mutex::new(EmulateReport::default()),
    });
    // Fail fast when nothing listens there, rather than retrying every post.
    let probe = format!("{}/{}", shared.base, if a.mode == Mode::Batch { "topics" } else { "streams" });
    let mut head = shared.client.get(&probe);
    if let Some(k) = &a.api_key {
        head = head.header("x-api-key", k);
    }
    let mut head = head.build()?;
    if let Some(signer) = &shared.signer {
        signer.sign(&mut head).await?;
    }
    shared.client.execute(head).await.with_context(|| format!("cannot reach the ingest API at {} (is `pinpipe serve` running?)", a.api))?;
    let bar = if a.quiet { indicatif::ProgressBar::hidden() } else { ui::bar(count, "posting") };
    let next = Arc::new(AtomicU64::new(0));
    let (started, cpu_at_start) = (Instant::now(), crate::bench::cpu_seconds());
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (shared, posts, next, bar) = (shared.clone(), posts.clone(), next.clone(), bar.clone());
        let (rate, skip) = (a.rate, a.skip);
        workers.push(tokio::spawn(async move {
            loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= groups {
                    return Ok::<_, anyhow::Error>(());
                }
                let (from, to) = (g * batch, ((g + 1) * batch).min(count));
                if let Some(r) = rate.filter(|r| *r > 0.0) {
                    let due = started + Duration::from_secs_f64(from as f64 / r);
                    tokio::time::sleep_until(due.into()).await;
                }
                let recs: Vec<[Cow<'_, [u8]>; 3]> = (from..to).map(|t| posts.post(skip + t)).collect();
                for (k, kind) in Kind::ALL.iter().enumerate() {
                    let values: Vec<&[u8]> = recs.iter().map(|r| r[k].as_ref()).collect();
                    send_with_retries(&shared, *kind, values).await;
                }
                bar.inc(to - from);
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    bar.finish_and_clear();
    let mut report = shared.report.lock().map_err(|_| anyhow::anyhow!("report lock"))?.clone();
    report.posts = count;
    report.seconds = started.elapsed().as_secs_f64();
    report.cpu_seconds = crate::bench::cpu_seconds() - cpu_at_start;
    Ok(report)
}

fn request_body<V: AsRef<[u8]>>(mode: Mode, stream: &str, values: &[V]) -> (String, Vec<u8>) {
    let mut body = Vec::with_capacity(values.iter().map(|v| v.as_ref().len() + 40).sum());
    // `{"records": [{"<field>": <value><tail>}, ...]}`, the REST proxy's and PutRecords' shape.
    let records = |body: &mut Vec<u8>, field: &str, tail: &[u8]| {
        body.extend_from_slice(b"{\"records\": [");
        let open = format!("{{\"{field}\": ");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                body.extend_from_slice(b", ");
            }
            body.extend_from_slice(open.as_bytes());
            body.extend_from_slice(v.as_ref());
            body.extend_from_slice(tail);
        }
        body.extend_from_slice(b"]}");
    };
    match (mode, values.len()) {
        (Mode::Batch, _) => {
            records(&mut body, "value", b"}");
            ("application/vnd.kafka.json.v2+json".into(), body)
        }
        (Mode::Stream, 1) => {
            body.extend_from_slice(format!("{{\"StreamName\": \"{stream}\", \"Data\": ").as_bytes());
            body.extend_from_slice(values[0].as_ref());
            body.extend_from_slice(b", \"PartitionKey\": \"partition-1\"}");
            ("application/json".into(), body)
        }
        (Mode::Stream, _) => {
            records(&mut body, "data", b", \"partition-key\": \"partition-1\"}");
            ("application/json".into(), body)
        }
    }
}

async fn send_with_retries(s: &Shared, kind: Kind, mut values: Vec<&[u8]>) {
    let (url, stream) = match s.mode {
        Mode::Batch => (format!("{}/topics/{}", s.base, s.id.topic(kind)), String::new()),
        Mode::Stream => {
            let stream = s.id.stream(kind);
            let tail = if values.len() == 1 { "record" } else { "records" };
            (format!("{}/streams/{stream}/{tail}", s.base), stream)
        }
    };
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=s.retries {
        let (ctype, body) = request_body(s.mode, &stream, &values);
        let mut req = match s.mode {
            Mode::Batch => s.client.post(&url),
            Mode::Stream => s.client.put(&url),
        }
        .header("content-type", ctype)
        .body(body);
        if let Some(k) = &s.api_key {
            req = req.header("x-api-key", k);
        }
        // Signed per attempt: a signature is valid for minutes, and retries may wait longer.
        let prepared = async {
            let mut req = req.build().map_err(|e| e.to_string())?;
            if let Some(signer) = &s.signer {
                signer.sign(&mut req).await.map_err(|e| format!("{e:#}"))?;
            }
            Ok::<_, String>(req)
        }
        .await;
        let sent = Instant::now();
        let result = match prepared {
            Err(e) => Err(e),
            Ok(req) => match s.client.execute(req).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.bytes().await.map(|b| (status, b)).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
        };
        let ms = sent.elapsed().as_secs_f64() * 1e3;
        let (status_key, retry) = {
            match &result {
                Ok((200, body)) => {
                    let failed = pinpipe_ingest::api::unstored_records(s.mode == Mode::Stream, values.len(), body);
                    let stored = values.len() - failed.len();
                    let mut r = s.report.lock().unwrap_or_else(|e| e.into_inner());
                    r.records_stored += stored as u64;
                    ("200".to_string(), Some(failed))
                }
                Ok((status, _)) if *status == 503 || *status == 429 || *status >= 500 => (status.to_string(), None),
                Ok((status, body)) => {
                    tracing::warn!(status, body = %String::from_utf8_lossy(body), "records refused");
                    let mut r = s.report.lock().unwrap_or_else(|e| e.into_inner());
                    r.refused += values.len() as u64;
                    (status.to_string(), Some(vec![]))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request failed; will retry");
                    ("error".to_string(), None)
                }
            }
        };
        {
            let mut r = s.report.lock().unwrap_or_else(|e| e.into_inner());
            r.requests += 1;
            r.latencies_ms.push(ms);
            *r.statuses.entry(status_key).or_default() += 1;
        }
        // `None`: retry all; `Some(list)`: retry only those records.
        let again: Vec<&[u8]> = match retry {
            Some(failed) => failed.into_iter().map(|i| values[i]).collect(),
            None => values.clone(),
        };
        if again.is_empty() {
            return;
        }
        if attempt == s.retries {
            s.report.lock().unwrap_or_else(|e| e.into_inner()).given_up += again.len() as u64;
            return;
        }
        s.report.lock().unwrap_or_else(|e| e.into_inner()).retried_records += again.len() as u64;
        values = again;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(Args)]
pub struct KafkaMockArgs {
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 1)]
    pub brokers: i32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
}

/// librdkafka's mock cluster as a process: a real Kafka-protocol broker on 127.0.0.1 for local
/// runs and tests where no broker is installed. Prints its bootstrap address, runs until
/// stopped; SIGUSR1/SIGUSR2 take the brokers down and up.
pub async fn kafka_mock(id: &PipelineId, a: KafkaMockArgs) -> Result<()> {
    let mock = rdkafka::mocking::MockCluster::new(a.brokers).context("starting librdkafka's mock cluster")?;
    for kind in Kind::ALL {
        mock.create_topic(&id.topic(kind), a.partitions, 1).with_context(|| format!("creating {}", id.topic(kind)))?;
    }
    println!("{}", mock.bootstrap_servers());
    use std::io::Write;
    std::io::stdout().flush()?;
    // SIGUSR1 takes every broker down, SIGUSR2 brings them back: an outage without losing
    // what the brokers hold (a restart of this in-memory cluster would lose it).
    use tokio::signal::unix::{signal, SignalKind};
    let (mut down, mut up) = (signal(SignalKind::user_defined1())?, signal(SignalKind::user_defined2())?);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = down.recv() => {
                for b in 1..=a.brokers { mock.broker_down(b)?; }
                eprintln!("kafka-mock: brokers down");
            }
            _ = up.recv() => {
                for b in 1..=a.brokers { mock.broker_up(b)?; }
                eprintln!("kafka-mock: brokers up");
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ConsumeArgs {
    /// Kafka bootstrap servers to consume the pipeline's topics from (into the Kafka sink).
    #[arg(long, required_unless_present = "kinesis")]
    pub kafka: Option<String>,
    /// Consume the pipeline's Kinesis streams (into the Kinesis sink), as in `serve`: at
    /// ENDPOINT, or without one (or `on`) at AWS_ENDPOINT_URL_KINESIS / AWS_ENDPOINT_URL.
    #[arg(long, num_args = 0..=1, default_missing_value = "on", value_name = "ENDPOINT")]
    pub kinesis: Option<String>,
    /// Root of the Delta tables.
    #[arg(long, env = "PINPIPE_TABLES")]
    pub tables: String,
    /// Root of the raw landing, where both sinks land raw batches (topics/, kinesis/); needed.
    #[arg(long, env = "PINPIPE_LANDING")]
    pub landing: Option<String>,
    /// Records per sink invocation at most.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Longest wait to fill a batch, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub batch_window_ms: u64,
    /// Exit after this many milliseconds without records (default: run until Ctrl-C).
    #[arg(long, value_name = "MS")]
    pub idle_exit_ms: Option<u64>,
    /// The same in seconds (kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "idle_exit_ms")]
    pub idle_exit: Option<f64>,
}

/// Feeds the sink handlers from a real broker and/or stream until idle or stopped.
pub async fn consume(id: &PipelineId, a: ConsumeArgs, json: bool) -> Result<()> {
    use pinpipe_core::jobs::config::Config;
    use crate::consume::{self as c, ConsumeOptions};
    use std::sync::atomic::AtomicBool;
    let (tables, landing) = (a.tables.clone(), a.landing.clone());
    let cfg = Config::from_lookup(|k| match k {
        "PINPIPE_ID" => Some(id.as_str().to_string()),
        "PINPIPE_TABLES" => Some(tables.clone()),
        "PINPIPE_LANDING" => landing.clone(),
        other => std::env::var(other).ok().filter(|v| !v.is_empty()),
    })?;
    let opts = ConsumeOptions {
        batch_size: a.batch_size.max(1),
        batch_window: Duration::from_millis(a.batch_window_ms),
        idle_exit: a.idle_exit_ms.map(Duration::from_millis).or(a.idle_exit.map(|s| Duration::from_secs_f64(s.max(0.0)))),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let kafka = async {
        match &a.kafka {
            Some(bootstrap) => {
                let mut sink = pinpipe_core::jobs::handlers::KafkaSink::open(&cfg).await?;
                eprintln!("consuming {} from Kafka at {bootstrap}", id.topic(Kind::Pin).replace(".pin", ".{pin,geo,user}"));
                anyhow::Ok(Some(c::consume_kafka(bootstrap, id, &mut sink, &opts, stop.clone()).await?))
            }
            None => Ok(None),
        }
    };
    let kinesis = async {
        match &a.kinesis {
            Some(endpoint) => {
                let client = pinpipe_ingest::kinesis::client(Some(endpoint.as_str()).filter(|e| !e.is_empty() && *e != "on"), Duration::from_secs(10)).await;
                let mut sink = pinpipe_core::jobs::handlers::KinesisSink::open(&cfg).await?;
                eprintln!("consuming {} from Kinesis", id.stream(Kind::Pin).replace("-pin", "-{pin,geo,user}"));
                anyhow::Ok(Some(c::consume_kinesis(&client, id, &mut sink, &opts, stop.clone()).await?))
            }
            None => Ok(None),
        }
    };
    let (k, s) = tokio::join!(kafka, kinesis);
    let (k, s) = (k?, s?);
    if json {
        println!("{}", serde_json::json!({"kafka": k, "kinesis": s}));
        return Ok(());
    }
    for (name, r) in [("kafka", k), ("kinesis", s)] {
        if let Some(r) = r {
            println!(
                "{name}: {} batches, {} records received: {} tabled, {} quarantined, {} already present, {} redeliveries",
                r.batches, r.received, r.tabled, r.quarantined, r.already_present, r.redelivered
            );
        }
    }
    Ok(())
}

/// Posts generated rows `[start, end)` through the ingest handler in-process (no HTTP), `per_request`
/// records per request, `concurrency` requests at once; returns the records stored.
/// Any refusal or failure is an error: the demo and benchmarks expect every record in.
#[allow(clippy::too_many_arguments)]
pub async fn post_generated_range(
    api: &Ingest,
    id: &PipelineId,
    cfg: &GenConfig,
    start: u64,
    end: u64,
    per_request: u64,
    concurrency: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    use futures::StreamExt;
    let groups: Vec<(u64, u64)> = (start..end).step_by(per_request as usize).map(|f| (f, (f + per_request).min(end))).collect();
    let stored = AtomicU64::new(0);
    let results: Vec<Result<()>> = futures::stream::iter(groups)
        .map(|(from, to)| {
            let stored = &stored;
            async move {
                let bufs = generate::block(cfg, from, to);
                for (kind, buf) in Kind::ALL.iter().zip(bufs) {
                    let values = jsonl_records(Bytes::from(buf));
                    let (ctype, body) = request_body(Mode::Batch, "", &values);
                    let reply = api.handle("POST", &format!("/topics/{}", id.topic(*kind)), Some(&ctype), &body).await;
                    anyhow::ensure!(reply.status == 200, "ingest API answered {}: {}", reply.status, reply.body);
                    let failed = pinpipe_ingest::api::unstored_records(false, values.len(), reply.body.as_bytes());
                    anyhow::ensure!(failed.is_empty(), "{} records not stored: {}", failed.len(), reply.body);
                    stored.fetch_add(values.len() as u64, Ordering::Relaxed);
                }
                progress(to - from);
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(stored.into_inner())
}
