//! `bench ingest`: records through `pinpipe emulate` → `pinpipe serve` → Kafka against an
//! rdkafka producer sending the same records directly, and the ingest Lambda's init time.

use super::{figure, say};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pinpipe_devtools::generate::{self, GenConfig};
use pinpipe_core::PipelineId;

use super::*;

pub(super) async fn ingest(id: &PipelineId, posts: u64, batch_size: usize, concurrency: usize, kafka: Option<String>, runs: usize) -> Result<()> {
    use pinpipe_core::Kind;
    use pinpipe_ingest::kafka::{KafkaProducer, OutRecord, Outcome};
    let mock = match &kafka {
        Some(_) => None,
        None => {
            let m = rdkafka::mocking::MockCluster::new(1).context("starting librdkafka's mock cluster")?;
            for kind in Kind::ALL {
                m.create_topic(&id.topic(kind), 1, 1)?;
            }
            Some(m)
        }
    };
    let bootstrap = kafka.clone().unwrap_or_else(|| mock.as_ref().map(|m| m.bootstrap_servers()).unwrap_or_default());
    let seed = 7;
    let cfg = GenConfig { posts, seed, duplicates: 0.0 };
    let records = posts * 3;
    say!("bench ingest: {posts} posts ({records} records), {batch_size} posts per request, {concurrency} in flight, broker {}",
        if kafka.is_some() { bootstrap.as_str() } else { "librdkafka mock cluster" });

    // (a) The floor: the same records straight into an rdkafka producer with the same settings.
    let ingest_cfg = pinpipe_ingest::IngestConfig::new(id.clone());
    let producer = KafkaProducer::new(&ingest_cfg, &bootstrap)?;
    let bufs = generate::block(&cfg, 0, cfg.total_rows());
    // Split into records before timing, as `emulate` has its posts made before its clock.
    let values: Vec<Vec<&[u8]>> =
        bufs.iter().map(|buf| buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect()).collect();
    let direct = || async {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        for (kind, values) in Kind::ALL.iter().zip(&values) {
            for chunk in values.chunks(50_000) {
                let recs: Vec<OutRecord<'_>> = chunk.iter().map(|v| OutRecord { key: None, partition: None, value: v }).collect();
                let outcomes = producer.send(&id.topic(*kind), &recs).await;
                let failed = outcomes.iter().filter(|o| !matches!(o, Outcome::Stored { .. })).count();
                anyhow::ensure!(failed == 0, "{failed} records not stored by the direct producer");
            }
        }
        Ok((started.elapsed().as_secs_f64(), cpu_seconds() - cpu))
    };

    // (b) The same posts through `pinpipe emulate` → `pinpipe serve` (both child processes).
    let exe = std::env::current_exe()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut server = Command::new(&exe)
        .args(["--id", id.as_str(), "serve", "--listen", &format!("127.0.0.1:{port}"), "--kafka", &bootstrap, "--kinesis", "off"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting pinpipe serve")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("pinpipe serve did not start listening on port {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let server_pid = server.id();
    // Returns emulate's report and the CPU seconds of the broker (this process), serve and
    // emulate (its own figure: while sending, without making its posts).
    let through_api = || -> Result<(serde_json::Value, [f64; 3])> {
        let cpu_before = [cpu_seconds(), proc_cpu_seconds(server_pid)];
        let emulated = Command::new(&exe)
            .args(["--id", id.as_str(), "emulate", "--api", &format!("http://127.0.0.1:{port}"), "--mode", "batch"])
            .args(["--posts", &posts.to_string(), "--seed", &seed.to_string(), "--batch-size", &batch_size.to_string()])
            .args(["--concurrency", &concurrency.to_string(), "--quiet", "--json"])
            .output()
            .context("running pinpipe emulate")?;
        anyhow::ensure!(emulated.status.success(), "pinpipe emulate failed: {}", String::from_utf8_lossy(&emulated.stderr));
        let report: serde_json::Value = serde_json::from_slice(&emulated.stdout).context("reading emulate's JSON summary")?;
        anyhow::ensure!(report["records_stored"].as_u64() == Some(records), "emulate stored {} of {records} records", report["records_stored"]);
        let cpu = [cpu_seconds() - cpu_before[0], proc_cpu_seconds(server_pid) - cpu_before[1], report["cpu_seconds"].as_f64().unwrap_or(f64::NAN)];
        Ok((report, cpu))
    };
    type Run = ((f64, f64), (serde_json::Value, [f64; 3]));
    let measured: Result<Vec<Run>> = async {
        let mut results = Vec::new();
        for _ in 0..runs {
            results.push((direct().await?, through_api()?));
        }
        Ok(results)
    }
    .await;
    // The server goes whatever happened; then any failure is reported.
    let _ = server.kill();
    let _ = server.wait();
    let results = measured?;
    drop(values);
    drop(bufs);
    let direct_s = median(results.iter().map(|r| r.0 .0).collect());
    let direct_cpu = median(results.iter().map(|r| r.0 .1).collect());
    let api_s = median(results.iter().map(|r| r.1 .0["seconds"].as_f64().unwrap_or(f64::NAN)).collect());
    let api_cpu: [f64; 3] = std::array::from_fn(|i| median(results.iter().map(|r| r.1 .1[i]).collect()));
    // Latency percentiles of the run with the median time.
    let report = &results.iter().min_by(|x, y| {
        let d = |r: &Run| (r.1 .0["seconds"].as_f64().unwrap_or(f64::NAN) - api_s).abs();
        d(x).total_cmp(&d(y))
    }).context("no runs")?.1 .0;

    say!("median of {runs} interleaved runs per side; CPU shared by the broker, `serve` and `emulate`");
    say!("{:<44} {:>12} {:>10} {:>10}", "", "records/s", "p50 ms", "p99 ms");
    say!("{:<44} {:>12.0} {:>10} {:>10}", "(a) rdkafka producer, direct", records as f64 / direct_s, "-", "-");
    say!(
        "{:<44} {:>12.0} {:>10.1} {:>10.1}",
        "(b) pinpipe emulate -> pinpipe serve -> Kafka",
        records as f64 / api_s,
        report["p50_ms"].as_f64().unwrap_or(f64::NAN),
        report["p99_ms"].as_f64().unwrap_or(f64::NAN)
    );
    say!("ratio (b)/(a) (higher is better): {:.2}", direct_s / api_s);
    figure("bench", "ingest");
    figure("records", records);
    figure("records_per_second", records as f64 / api_s);
    figure("reference_records_per_second", records as f64 / direct_s);
    figure("ratio_throughput", direct_s / api_s);
    figure("p50_ms", report["p50_ms"].clone());
    figure("p99_ms", report["p99_ms"].clone());
    // Where the CPU goes, per million records: the machine's cores are shared by every part.
    let per_m = |cpu: f64| cpu / records as f64 * 1e6;
    say!(
        "CPU seconds per million records: (a) {:.2} (producer + broker); (b) {:.2} = broker {:.2} + serve {:.2} + emulate {:.2}",
        per_m(direct_cpu),
        per_m(api_cpu.iter().sum()),
        per_m(api_cpu[0]),
        per_m(api_cpu[1]),
        per_m(api_cpu[2])
    );

    // The Lambda's init: process start until it asks the Runtime API for its first event.
    let lambda = exe.with_file_name("ingest-api");
    if lambda.exists() {
        let mut times = Vec::new();
        for _ in 0..5 {
            times.push(lambda_init_ms(&lambda, &[("PINPIPE_ID", id.as_str().to_string()), ("PINPIPE_KAFKA_BROKERS", bootstrap.clone())])?);
        }
        times.sort_by(f64::total_cmp);
        say!("ingest-api Lambda init (process start -> first /invocation/next): median {:.1} ms, min {:.1} ms, max {:.1} ms",
            times[2], times[0], times[4]);
        figure("lambda_init_ms", times[2]);
    } else {
        say!("ingest-api Lambda init: not measured ({} is missing: cargo build -p ingest-api with this profile)", lambda.display());
    }
    Ok(())
}

/// Starts a Lambda binary with the function's own environment `env` (beside Lambda's) against
/// a stand-in Runtime API socket and times its first request.
pub(super) fn lambda_init_ms(lambda: &Path, env: &[(&str, String)]) -> Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let mut child = Command::new(lambda)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("pinpipe-{}", lambda.file_name().unwrap_or_default().to_string_lossy()))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_REGION", "us-east-1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", lambda.display()))?;
    // Wait for its first request, unless it exits first (a configuration error) or takes
    // longer than any cold start should.
    listener.set_nonblocking(true)?;
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if child.try_wait()?.is_some() || started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("{} did not ask for an event: {}", lambda.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    };
    conn.set_nonblocking(false)?;
    let mut buf = [0u8; 256];
    let n = conn.read(&mut buf)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let _ = child.kill();
    let _ = child.wait();
    anyhow::ensure!(
        String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next"),
        "the Lambda's first request was not /runtime/invocation/next"
    );
    Ok(ms)
}
