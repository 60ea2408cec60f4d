//! Opening a table, creating it with its schema, and bringing it up to date cheaply.


use deltalake::kernel::StructField;
use delta_kernel::table_features::TableFeature;
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::StreamExt;
use object_store::ObjectStoreExt;

use crate::error::{Error, Result};
use crate::storage::{self, Location};
use super::*;

/// Opens the table `name` under `root`, or `None` when nothing is there yet.
pub async fn open(root: &Location, name: &str) -> Result<Option<DeltaTable>> {
    storage::init();
    if !has_log(&root.join(name)).await? {
        return Ok(None);
    }
    let url = root.join(name).url().clone();
    let builder = DeltaTableBuilder::from_url(url)
        .map_err(|e| Error::delta(name, e))?
        .with_storage_options(storage::delta_storage_options());
    match builder.load().await {
        Ok(t) => {
            check_supported(&t, name)?;
            Ok(Some(t))
        }
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(Error::delta(name, e)),
    }
}

/// Brings the table up to date, after one HEAD request for the commit after its version:
/// when that commit does not exist (commits are numbered without holes), the table is current
/// and the log is not listed. Listing is what grows with the log's length (a local directory
/// is read whole), and a writer's refresh usually finds nothing new.
pub async fn update_if_newer(table: &mut DeltaTable, name: &str) -> Result<()> {
    if let Some(v) = table.version() {
        let next = object_store::path::Path::from(format!("_delta_log/{:020}.json", v + 1));
        match table.object_store().head(&next).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(Error::Storage { location: format!("{name}/{next}"), source: e }),
        }
    }
    table.update_state().await.map_err(|e| Error::delta(name, e))?;
    check_supported(table, name)
}

/// Refuses a table whose protocol or properties change what pinpipe reads or keeps, naming
/// the feature. Why: pinpipe reads the tables' Parquet files itself and keeps its
/// exactly-once state in txn actions, so
/// - a reader feature (`deletionVectors`, `columnMapping`, …) would make it read rows another
///   engine deleted, or columns by the wrong names. `v2Checkpoint` is the exception: it only
///   changes how the log is summarised, which deltalake and the kernel's log segment (how
///   pinpipe reads txn actions) both read;
/// - `delta.columnMapping.mode` does the same on older protocols;
/// - `delta.setTransactionRetentionDuration` lets checkpoints drop txn actions: gaps would
///   vanish (records lost) and an idle partition's watermark expire (its landing re-tabled).
pub fn check_supported(table: &DeltaTable, name: &str) -> Result<()> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(name, e))?;
    let unsupported = |what: String| Err(Error::Unsupported { table: name.to_string(), what });
    let props = snapshot.table_config();
    if let Some(d) = props.set_transaction_retention_duration {
        return unsupported(format!(
            "delta.setTransactionRetentionDuration is set ({} s): checkpoints would expire the txn actions that \
             hold pinpipe's watermarks and gaps; unset the property (ALTER TABLE … UNSET TBLPROPERTIES)",
            d.as_secs()
        ));
    }
    if let Some(mode) = props.column_mapping_mode.map(|m| format!("{m:?}").to_lowercase()).filter(|m| m != "none") {
        return unsupported(format!("delta.columnMapping.mode is {mode}: pinpipe reads columns by their names in the files"));
    }
    let protocol = snapshot.protocol();
    let misread: Vec<String> = protocol
        .reader_features()
        .unwrap_or_default()
        .iter()
        .filter(|f| **f != TableFeature::V2Checkpoint)
        .map(|f| f.to_string())
        .collect();
    if !misread.is_empty() {
        return unsupported(format!(
            "the table's protocol has reader features [{}]: pinpipe reads the data files itself and would misread them",
            misread.join(", ")
        ));
    }
    Ok(())
}

/// Whether `root` holds a table `name` (its `_delta_log` has an object), without loading it.
pub async fn exists(root: &Location, name: &str) -> Result<bool> {
    has_log(&root.join(name)).await
}

/// Whether a Delta log exists at `table` (without creating anything).
pub(crate) async fn has_log(table: &Location) -> Result<bool> {
    if let Some(p) = table.local_path() {
        return Ok(p.join("_delta_log").is_dir());
    }
    let store = table.store()?;
    let prefix = object_store::path::Path::from("_delta_log");
    let first = store.list(Some(&prefix)).next().await;
    match first {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(Error::Storage { location: table.display(), source: e }),
    }
}

/// Opens `name`, creating it with `fields` when absent; refuses a table whose schema differs.
pub async fn open_or_create(root: &Location, name: &str, fields: Vec<StructField>) -> Result<DeltaTable> {
    if let Some(table) = open(root, name).await? {
        let existing: Vec<StructField> = table
            .snapshot()
            .map_err(|e| Error::delta(name, e))?
            .schema()
            .fields()
            .cloned()
            .collect();
        if describe(&existing) != describe(&fields) {
            return Err(Error::SchemaConflict {
                table: name.to_string(),
                detail: format!(
                    "found [{}], expected [{}]; move the table aside or point --output elsewhere",
                    describe(&existing).join(", "),
                    describe(&fields).join(", ")
                ),
            });
        }
        return Ok(table);
    }
    if let Some(p) = root.local_path() {
        std::fs::create_dir_all(p.join(name))
            .map_err(|e| Error::Io { path: p.join(name).display().to_string(), source: e })?;
    }
    let expected = fields.clone();
    let created = CreateBuilder::new()
        .with_location(root.join(name).url().as_str())
        .with_storage_options(storage::delta_storage_options())
        .with_table_name(name)
        .with_columns(fields)
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another writer may have created it first: use theirs, checked like any existing one.
        Err(e) => match open(root, name).await? {
            Some(_) => Box::pin(open_or_create(root, name, expected)).await,
            None => Err(Error::delta(name, e)),
        },
    }
}
