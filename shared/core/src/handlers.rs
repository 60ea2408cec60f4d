//! Lambda handlers as plain functions of (config, event): the `functions/` crates wrap them in
//! the Lambda runtime and `pinpipe invoke` calls them directly with an event file.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::analysis::OUTPUTS;
use crate::config::Config;
use crate::delta;
use crate::error::Result;
use crate::maintenance::{self, MaintenanceReport};
use crate::names::Kind;
use crate::pipeline::{self, Tables, WriteReport};
use crate::run::{self, fmt_time};

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

/// The daily job (replaces the Airflow DAG): catch up from the landing, maintain the tables,
/// compute the nine outputs, write them as tables and as `reports/<date>/` + `reports/latest/`.
pub async fn batch_analysis(cfg: &Config, event: EventBridgeEvent<serde_json::Value>) -> Result<BatchAnalysisResponse> {
    let run_time = scheduled_time(&event);
    tracing::info!(run_time = %fmt_time(&run_time), id = cfg.id.as_str(), "scheduled analysis started");
    let mut tables = Tables::open(&cfg.tables, &cfg.id).await?;
    let catch_up = match &cfg.landing {
        Some(landing) => {
            let r = pipeline::clean_landing(landing, &mut tables, &|_, _| {}).await?;
            let total = r.total();
            tracing::info!(received = total.received, tabled = total.tabled, quarantined = total.quarantined,
                already_present = total.skipped, "caught up from the landing");
            Some(total)
        }
        None => None,
    };
    let mut maintenance_reports = Vec::new();
    let names: Vec<String> = Kind::ALL.iter().map(|k| cfg.id.table(*k)).chain([cfg.id.quarantine_table()]).collect();
    for name in names {
        if let Some(table) = delta::open(&cfg.tables, &name).await? {
            let report = maintenance::maintain(table, &name, &cfg.maintenance).await?;
            tracing::info!(table = %name, compacted = report.files_compacted, written = report.files_written,
                vacuumed = report.files_vacuumed, checkpoint = ?report.checkpoint_at, "maintained");
            maintenance_reports.push(report);
        }
    }
    let run = run::analyze(&cfg.tables, &cfg.id, run_time).await?;
    run.write_tables(&cfg.tables).await?;
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
    Ok(BatchAnalysisResponse { run_time: fmt_time(&run_time), catch_up, maintenance: maintenance_reports, outputs, reports })
}
