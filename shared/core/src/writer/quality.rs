//! The tables' quality counts (contract §5 `results.json`): each cleaning commit carries its
//! counts in its metadata; a rollup file summed through a version keeps the totals cheap to
//! read and lets log cleanup drop old commits.

use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::clean::Quality;
use crate::delta;
use crate::error::{Error, Result};

/// Where maintenance keeps a table's quality counts summed through a version: a hidden file
/// in the table's folder, which Delta readers and vacuum leave alone.
const QUALITY_ROLLUP: &str = "_pinpipe_quality.json";

#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct QualityRollup {
    through_version: u64,
    totals: Quality,
}

/// A table's quality counts over every cleaning commit: maintenance's rollup plus the commits
/// after it, so the cost is one day's commits, not the table's history, and the counts
/// survive log cleanup. Without a rollup (a table maintenance never ran on), the history.
pub async fn quality_totals(table: &DeltaTable, name: &str) -> Result<Quality> {
    let Some(current) = table.version() else { return Ok(Quality::default()) };
    let rollup: Option<QualityRollup> = match table.object_store().get(&object_store::path::Path::from(QUALITY_ROLLUP)).await {
        Ok(got) => got.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()),
        Err(_) => None,
    };
    // Counts of forgotten records come off after every count has been added.
    let mut forgotten = Quality::default();
    let Some(rollup) = rollup.filter(|r| r.through_version <= current) else {
        let mut totals = Quality::default();
        for v in delta::history_metadata(table, name, delta::QUALITY_KEY).await? {
            if let Ok(q) = serde_json::from_value::<Quality>(v) {
                totals.add(&q);
            }
        }
        for v in delta::history_metadata(table, name, delta::QUALITY_FORGOTTEN_KEY).await? {
            if let Ok(q) = serde_json::from_value::<Quality>(v) {
                forgotten.add(&q);
            }
        }
        totals.sub(&forgotten);
        return Ok(totals);
    };
    let mut totals = rollup.totals;
    let infos = delta::commit_actions(table, name, rollup.through_version + 1..=current, "commitInfo").await?;
    let infos = infos.ok_or_else(|| Error::input(format!("{name}/_delta_log"), "a commit after the quality rollup is missing"))?;
    for mut info in infos {
        if let Ok(q) = serde_json::from_value::<Quality>(info[delta::QUALITY_KEY].take()) {
            totals.add(&q);
        }
        if let Ok(q) = serde_json::from_value::<Quality>(info[delta::QUALITY_FORGOTTEN_KEY].take()) {
            forgotten.add(&q);
        }
    }
    totals.sub(&forgotten);
    Ok(totals)
}

/// Sums the quality counts through the table's current version into the rollup, before log
/// cleanup may remove the commits that carry them.
pub async fn roll_up_quality(table: &DeltaTable, name: &str) -> Result<()> {
    let Some(through_version) = table.version() else { return Ok(()) };
    let totals = quality_totals(table, name).await?;
    let body = serde_json::to_vec(&QualityRollup { through_version, totals }).unwrap_or_default();
    let path = object_store::path::Path::from(QUALITY_ROLLUP);
    table
        .object_store()
        .put(&path, body.into())
        .await
        .map_err(|e| Error::Storage { location: format!("{name}/{QUALITY_ROLLUP}"), source: e })?;
    Ok(())
}

