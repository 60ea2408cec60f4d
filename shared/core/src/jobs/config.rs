//! Lambda configuration from the environment (contract §7); `pinpipe invoke` reads the same.

use crate::error::{Error, Result};
use crate::jobs::maintenance::MaintenanceConfig;
use crate::names::PipelineId;
use crate::storage::Location;

/// Everything a function needs, parsed once per container.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: PipelineId,
    pub tables: Location,
    pub landing: Option<Location>,
    pub reports: Option<Location>,
    pub maintenance: MaintenanceConfig,
    /// A catch-up step's time budget before it answers `complete: false`
    /// (PINPIPE_STEP_SECONDS, default 600 of the function's 900 s).
    pub step_seconds: f64,
    /// Raw bytes between the catch-up's commits, and so between its deadline checks
    /// (PINPIPE_CATCH_UP_CHUNK_BYTES; smaller only to try resumption).
    pub catch_up_chunk_bytes: u64,
    /// Posts per part above which the analysis reads the tables in parts
    /// (PINPIPE_ANALYSIS_PART_ROWS).
    pub analysis_part_rows: u64,
    /// Whether EMF metric lines are written (PINPIPE_METRICS, default on inside Lambda).
    pub metrics: bool,
    /// Hours a Kinesis shard writes nothing before its watermark slot may go to another shard
    /// (PINPIPE_SHARD_IDLE_HOURS, default 24; see docs/exactly-once.md).
    pub shard_idle_hours: f64,
}

impl Config {
    /// The defaults for pipeline `id` with its tables at `tables` (no landing, no reports):
    /// what the CLI starts from before applying its flags.
    pub fn new(id: PipelineId, tables: Location) -> Self {
        Config {
            id,
            tables,
            landing: None,
            reports: None,
            maintenance: MaintenanceConfig::default(),
            step_seconds: 600.0,
            catch_up_chunk_bytes: crate::writer::CLEAN_CHUNK_BYTES,
            analysis_part_rows: crate::analysis::run::DEFAULT_PART_ROWS,
            metrics: false,
            shard_idle_hours: crate::writer::DEFAULT_SHARD_IDLE_HOURS as f64,
        }
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Parses configuration from any key lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |k: &str| get(k).ok_or_else(|| Error::Config(format!("{k} is not set (see README, Configuration)")));
        let loc = |k: &str| get(k).map(|v| Location::parse(&v)).transpose();
        let num = |k: &str, default: i64| -> Result<i64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| Error::Config(format!("{k}={v:?} is not a whole number"))),
            }
        };
        let d = MaintenanceConfig::default();
        Ok(Config {
            id: PipelineId::new(&need("PINPIPE_ID")?)?,
            tables: Location::parse(&need("PINPIPE_TABLES")?)?,
            landing: loc("PINPIPE_LANDING")?,
            reports: loc("PINPIPE_REPORTS")?,
            maintenance: MaintenanceConfig {
                checkpoint_interval: num("PINPIPE_CHECKPOINT_INTERVAL", d.checkpoint_interval)?,
                target_file_bytes: num("PINPIPE_COMPACT_TARGET_BYTES", d.target_file_bytes)?,
                min_small_files: num("PINPIPE_COMPACT_MIN_FILES", d.min_small_files as i64)? as usize,
                vacuum_retention_hours: num("PINPIPE_VACUUM_RETENTION_HOURS", d.vacuum_retention_hours)?,
            },
            step_seconds: match get("PINPIPE_STEP_SECONDS") {
                None => 600.0,
                Some(v) => v.parse::<f64>().ok().filter(|s| s.is_finite()).ok_or_else(|| {
                    Error::Config(format!("PINPIPE_STEP_SECONDS={v:?} is not a number of seconds"))
                })?,
            }
            .max(0.0),
            analysis_part_rows: crate::analysis::run::parse_part_rows(get("PINPIPE_ANALYSIS_PART_ROWS").as_deref())?,
            metrics: crate::metrics::setting(get("PINPIPE_METRICS").as_deref(), get("AWS_LAMBDA_FUNCTION_NAME").is_some()),
            catch_up_chunk_bytes: num("PINPIPE_CATCH_UP_CHUNK_BYTES", crate::writer::CLEAN_CHUNK_BYTES as i64)?.max(1) as u64,
            shard_idle_hours: match get("PINPIPE_SHARD_IDLE_HOURS") {
                None => crate::writer::DEFAULT_SHARD_IDLE_HOURS as f64,
                Some(v) => v.parse::<f64>().ok().filter(|h| h.is_finite() && *h >= 0.0).ok_or_else(|| {
                    Error::Config(format!("PINPIPE_SHARD_IDLE_HOURS={v:?} is not a number of hours (0 or more)"))
                })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_spec_variables_and_explains_missing_ones() {
        let env: HashMap<&str, &str> = [
            ("PINPIPE_ID", "121ca9f7ce2b"),
            ("PINPIPE_TABLES", "s3://bucket/tables"),
            ("PINPIPE_REPORTS", "s3://bucket"),
            ("PINPIPE_VACUUM_RETENTION_HOURS", "24"),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.id.as_str(), "121ca9f7ce2b");
        assert!(c.landing.is_none());
        assert_eq!(c.maintenance.vacuum_retention_hours, 24);
        let err = Config::from_lookup(|_| None).unwrap_err().to_string();
        assert!(err.contains("PINPIPE_ID is not set"), "{err}");
        let bad: HashMap<&str, &str> =
            [("PINPIPE_ID", "x"), ("PINPIPE_TABLES", "/t"), ("PINPIPE_CHECKPOINT_INTERVAL", "ten")].into();
        let err = Config::from_lookup(|k| bad.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(err.contains("PINPIPE_CHECKPOINT_INTERVAL"), "{err}");
    }
}
