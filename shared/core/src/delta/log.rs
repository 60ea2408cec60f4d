//! What a table's log says beyond its files: txn watermarks (the exactly-once keys), the
//! checkpoint hint, and per-commit actions and metadata.

use std::collections::HashMap;

use arrow::array::{
    Array,
    StringArray,
};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};

/// Commit metadata key under which each cleaning commit stores its quality counts.
pub const QUALITY_KEY: &str = "pinpipe.quality";

/// Commit metadata key under which a `pinpipe forget` commit stores the quality counts of the
/// records it removed, which the totals then leave out.
pub const QUALITY_FORGOTTEN_KEY: &str = "pinpipe.quality_forgotten";

/// The exactly-once watermark stored for `app_id`, if any.
pub async fn txn_version(table: &DeltaTable, name: &str, app_id: &str) -> Result<Option<i64>> {
    table
        .snapshot()
        .map_err(|e| Error::delta(name, e))?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| Error::delta(name, e))
}

/// App id → (version, lastUpdated in ms since the epoch, when the writer set it).
type TxnMap = HashMap<String, (i64, Option<i64>)>;

/// Every txn action of a table as of one snapshot (app id → latest version), read once per
/// snapshot instead of one log replay per app id, and brought forward by reading only the
/// commits since the last read.
#[derive(Debug, Clone, Default)]
pub struct Txns {
    /// The table version these are as of.
    version: Option<u64>,
    map: TxnMap,
}

impl Txns {
    /// The txn actions of the table's loaded version, read afresh.
    pub async fn read(table: &DeltaTable, name: &str) -> Result<Txns> {
        let mut txns = Txns::default();
        txns.update(table, name).await?;
        Ok(txns)
    }

    pub fn get(&self, app_id: &str) -> Option<i64> {
        self.map.get(app_id).map(|t| t.0)
    }
    /// Sets txn actions as a commit would (unit tests of what reads them).
    #[cfg(test)]
    pub fn set_all(&mut self, txns: &[(String, i64)], at: Option<i64>) {
        for (id, v) in txns {
            self.map.insert(id.clone(), (*v, at));
        }
    }
    /// When `app_id` was last written (the txn's `lastUpdated`), if the writer said.
    pub fn last_updated(&self, app_id: &str) -> Option<i64> {
        self.map.get(app_id).and_then(|t| t.1)
    }
    pub fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Brings these up to the table's loaded version: the commits after the one last read,
    /// or, the first time (or when those commits are gone), the last checkpoint and the
    /// commits after it.
    pub async fn update(&mut self, table: &DeltaTable, name: &str) -> Result<()> {
        let Some(target) = table.version() else { return Ok(()) };
        if self.version == Some(target) {
            return Ok(());
        }
        if let Some(from) = self.version.filter(|v| *v < target) {
            if let Some(txns) = commit_actions(table, name, from + 1..=target, "txn").await? {
                add_txns(&mut self.map, txns);
                self.version = Some(target);
                return Ok(());
            }
        }
        let map = all_txns(table, name, target).await?;
        *self = Txns { version: Some(target), map };
        Ok(())
    }
}

fn add_txns(map: &mut TxnMap, txns: Vec<serde_json::Value>) {
    for t in txns {
        if let (Some(app), Some(version)) = (t["appId"].as_str(), t["version"].as_i64()) {
            map.insert(app.to_string(), (version, t["lastUpdated"].as_i64()));
        }
    }
}

/// The `_delta_log/_last_checkpoint` hint: the last checkpoint's version.
pub struct LastCheckpoint {
    pub version: u64,
}

/// The table's last checkpoint, if it has one.
pub async fn last_checkpoint(table: &DeltaTable, name: &str) -> Result<Option<LastCheckpoint>> {
    let path = object_store::path::Path::from("_delta_log/_last_checkpoint");
    let storage = |e| Error::Storage { location: format!("{name}/{path}"), source: e };
    let bytes = match table.log_store().object_store(None).get(&path).await {
        Ok(got) => got.bytes().await.map_err(storage)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(storage(e)),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(v["version"].as_u64().map(|version| LastCheckpoint { version }))
}

/// The `key` actions (`txn`, `commitInfo`, …) of the commits `versions`, in commit order, as
/// JSON; `None` when one of those commits is gone (log cleanup). Only lines naming `key` are
/// parsed.
pub async fn commit_actions(
    table: &DeltaTable,
    name: &str,
    versions: std::ops::RangeInclusive<u64>,
    key: &str,
) -> Result<Option<Vec<serde_json::Value>>> {
    let needle = format!("\"{key}\"");
    let mut out = Vec::new();
    for v in versions {
        let Some(commit) = table.log_store().read_commit_entry(v).await.map_err(|e| Error::delta(name, e))? else {
            return Ok(None);
        };
        for line in commit.split(|b| *b == b'\n') {
            if memchr::memmem::find(line, needle.as_bytes()).is_none() {
                continue;
            }
            if let Ok(mut action) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(value) = action.get_mut(key).map(serde_json::Value::take) {
                    out.push(value);
                }
            }
        }
    }
    Ok(Some(out))
}

/// Every app id's latest txn version as of `version`, by the Delta kernel's replay of the
/// log segment its snapshot stands on: the newest checkpoint whatever its shape (one file,
/// several parts, V2 under a UUID name with sidecars) and the commits after it, newest first
/// (so the first txn seen for an app id is its latest). Only the `txn` column is read.
async fn all_txns(table: &DeltaTable, name: &str, version: u64) -> Result<TxnMap> {
    use delta_kernel::actions::LOG_TXN_SCHEMA;
    use delta_kernel::engine::arrow_data::ArrowEngineData;
    let url = table.log_store().transaction_url(None).map_err(|e| Error::delta(name, e))?;
    let engine = table.log_store().engine(None);
    let replay = move || -> std::result::Result<TxnMap, Box<dyn std::error::Error + Send + Sync>> {
        let snapshot = delta_kernel::Snapshot::builder_for(url.as_str()).at_version(version).build(engine.as_ref())?;
        let mut map = HashMap::new();
        for batch in snapshot.log_segment().read_actions(engine.as_ref(), LOG_TXN_SCHEMA.clone())? {
            let data = ArrowEngineData::try_from_engine_data(batch?.actions)?;
            add_txn_column(&mut map, data.record_batch());
        }
        Ok(map)
    };
    tokio::task::spawn_blocking(replay)
        .await
        .map_err(|e| Error::input(format!("{name}/_delta_log"), e.to_string()))?
        .map_err(|e| Error::input(format!("{name}/_delta_log"), format!("reading the txn actions: {e}")))
}

/// Adds the `txn` actions of one batch of log rows, keeping the version already seen for an
/// app id (batches come newest first).
fn add_txn_column(map: &mut TxnMap, batch: &arrow::record_batch::RecordBatch) {
    use arrow::array::{Int64Array, StructArray};
    let Some(col) = batch.column_by_name("txn").and_then(|c| c.as_any().downcast_ref::<StructArray>()) else { return };
    let (Some(apps), Some(versions)) = (
        col.column_by_name("appId").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        col.column_by_name("version").and_then(|c| c.as_any().downcast_ref::<Int64Array>()),
    ) else {
        return;
    };
    let updated = col.column_by_name("lastUpdated").and_then(|c| c.as_any().downcast_ref::<Int64Array>());
    for i in 0..col.len() {
        if col.is_valid(i) && apps.is_valid(i) && versions.is_valid(i) {
            let at = updated.filter(|u| u.is_valid(i)).map(|u| u.value(i));
            map.entry(apps.value(i).to_string()).or_insert((versions.value(i), at));
        }
    }
}

/// The commit metadata under `key` of the commit that set `app_id` to `version`, where the
/// txn's version is the table version its writer expected to commit at (so the commit is
/// there or a few commits later, when deltalake rebased it over other writers' appends).
/// `Ok(None)`: no such commit up to the loaded version. An error when a commit on the way is
/// gone (log cleanup) before it was found.
pub async fn txn_commit_metadata(
    table: &DeltaTable,
    name: &str,
    app_id: &str,
    version: i64,
    key: &str,
) -> Result<Option<serde_json::Value>> {
    let Some(last) = table.version() else { return Ok(None) };
    for v in u64::try_from(version).unwrap_or(0)..=last {
        let Some(commit) = table.log_store().read_commit_entry(v).await.map_err(|e| Error::delta(name, e))? else {
            return Err(Error::input(
                format!("{name}/_delta_log/{v:020}.json"),
                format!("gone (log cleanup), so the commit that set {app_id} to {version} cannot be read"),
            ));
        };
        let mut info = None;
        let mut sets = false;
        for line in commit.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(mut action) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            if let Some(txn) = action.get("txn") {
                sets |= txn["appId"].as_str() == Some(app_id) && txn["version"].as_i64() == Some(version);
            } else if let Some(ci) = action.get_mut("commitInfo") {
                info = ci.get_mut(key).map(serde_json::Value::take);
            }
        }
        if sets {
            return Ok(Some(info.unwrap_or_default()));
        }
    }
    Ok(None)
}

/// Commit metadata values stored under `key` across the table's history, newest first.
pub async fn history_metadata(table: &DeltaTable, name: &str, key: &str) -> Result<Vec<serde_json::Value>> {
    let infos: Vec<_> = table.history(None).try_collect().await.map_err(|e| Error::delta(name, e))?;
    Ok(infos.into_iter().filter_map(|mut ci| ci.info.remove(key)).collect())
}
