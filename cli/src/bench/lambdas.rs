//! `bench lambdas`: each Lambda binary's size and init time, beside a reference build's.
//!
//! Init is measured as `bench ingest` does: from process start until the binary asks a
//! stand-in Runtime API for its first event, so it covers loading the binary, reading the
//! configuration and building the clients (the part of a cold start the code decides).

use super::{figure, say};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pinpipe_core::PipelineId;

use super::*;

const LAMBDAS: [&str; 4] = ["ingest-api", "kafka-sink", "kinesis-sink", "batch-analysis"];

pub(super) fn lambdas(id: &PipelineId, dir: Option<PathBuf>, reference: Option<PathBuf>, runs: usize) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::current_exe()?.parent().context("this binary has no folder")?.to_path_buf(),
    };
    let mock = rdkafka::mocking::MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    let work = tempdir("pinpipe-bench-lambdas")?;
    let env = |work: &Path| -> Vec<(&'static str, String)> {
        vec![
            ("PINPIPE_ID", id.as_str().to_string()),
            ("PINPIPE_KAFKA_BROKERS", mock.bootstrap_servers()),
            ("PINPIPE_TABLES", work.join("tables").display().to_string()),
            ("PINPIPE_LANDING", work.join("landing").display().to_string()),
            ("AWS_ACCESS_KEY_ID", "bench".into()),
            ("AWS_SECRET_ACCESS_KEY", "bench".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    };
    say!("bench lambdas: {} (reference: {}), median of {runs} starts each", dir.display(),
        reference.as_ref().map_or("none".into(), |r| r.display().to_string()));
    say!("{:<16} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}", "", "size MB", "ref MB", "ratio", "init ms", "ref ms", "ratio");
    for name in LAMBDAS {
        let ours = dir.join(name);
        if !ours.exists() {
            say!("{name:<16} missing: {} (cargo build -p {name} with that profile)", ours.display());
            continue;
        }
        let theirs = reference.as_ref().map(|r| r.join(name)).filter(|p| p.exists());
        // One untimed start each first: the sinks create their tables on their first start,
        // which a deployed function does once, not at every cold start.
        let (ours_env, theirs_env) = (env(&work.join("ours")), env(&work.join("theirs")));
        lambda_init_ms(&ours, &ours_env)?;
        if let Some(t) = &theirs {
            lambda_init_ms(t, &theirs_env)?;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            a.push(lambda_init_ms(&ours, &ours_env)?);
            if let Some(t) = &theirs {
                b.push(lambda_init_ms(t, &theirs_env)?);
            }
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN);
        let (size_a, init_a) = (size(&ours), median(a));
        match &theirs {
            Some(t) => {
                let (size_b, init_b) = (size(t), median(b));
                say!("{name:<16} {size_a:>10.1} {size_b:>10.1} {:>7.2} {init_a:>10.1} {init_b:>10.1} {:>7.2}",
                    size_a / size_b, init_a / init_b);
                figure(name, serde_json::json!({"size_mb": size_a, "init_ms": init_a, "reference_size_mb": size_b,
                    "reference_init_ms": init_b, "ratio_size": size_a / size_b, "ratio_init": init_a / init_b}));
            }
            None => {
                say!("{name:<16} {size_a:>10.1} {:>10} {:>7} {init_a:>10.1} {:>10} {:>7}", "-", "-", "-", "-");
                figure(name, serde_json::json!({"size_mb": size_a, "init_ms": init_a}));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempdir(tag: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
