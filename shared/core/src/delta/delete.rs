//! Copy-on-write deletes: files holding marked rows are replaced by files without them.

use std::sync::Arc;

use arrow::array::{
    RecordBatch,
};
use arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Action;
use deltalake::protocol::DeltaOperation;
use deltalake::DeltaTable;

use crate::error::{Error, Result};
use super::*;

/// Marks the rows of one batch to delete; it is given only the columns named beside it.
pub type RowFilter = Arc<dyn Fn(&RecordBatch) -> Result<arrow::array::BooleanArray> + Send + Sync>;

/// What a delete's commit records beside its files.
pub struct DeleteCommit<'a> {
    /// The predicate shown in the table's history.
    pub predicate: &'a str,
    /// Commit metadata, given the number of rows deleted.
    pub metadata: &'a (dyn Fn(u64) -> Vec<(String, serde_json::Value)> + Sync),
    /// Txn actions set in the same commit (it is made even when no row is deleted).
    pub txns: &'a [(String, i64)],
}

/// Deletes the rows `drop` marks, in one commit (copy-on-write: each file holding any is
/// replaced by a file without them), so a reader sees all of them or none. `columns` are what
/// `drop` reads: every file is read with those alone, and only files with rows to delete are
/// read whole. With `dry_run` nothing is written. Returns (rows deleted, files replaced); the
/// replaced files stay for readers of older versions until vacuum's retention has passed.
pub async fn delete_rows(
    table: &mut DeltaTable,
    name: &str,
    columns: &[&str],
    drop: RowFilter,
    commit: &DeleteCommit<'_>,
    dry_run: bool,
) -> Result<(u64, usize)> {
    let DeleteCommit { predicate, metadata, txns } = commit;
    let files = marked_per_file(table, name, columns, drop.clone()).await?;
    let deleted: u64 = files.iter().map(|(_, _, n)| n).sum();
    let touched: Vec<_> = files.iter().filter(|(_, _, n)| *n > 0).collect();
    if dry_run || (deleted == 0 && txns.is_empty()) {
        return Ok((deleted, touched.len()));
    }
    let schema = arrow_schema(table, name)?;
    let mut actions = vec![rewrite_fence(table)];
    for (path, remove, _) in &touched {
        let kept = rows_of_file(table, &schema, path, &drop, false).await?;
        let kept = arrow::compute::concat_batches(&schema, &kept)?;
        actions.extend(start_files(table, name, kept)?.join().await?);
        actions.push(Action::Remove(remove.clone()));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let txns = txns.iter().map(|(app_id, version)| deltalake::kernel::Transaction {
        app_id: app_id.clone(),
        version: *version,
        last_updated: Some(now),
    }).collect();
    let props = CommitProperties::default().with_metadata(metadata(deleted)).with_application_transactions(txns);
    commit_as(table, name, actions, props, DeltaOperation::Delete { predicate: Some(predicate.to_string()) }).await?;
    Ok((deleted, touched.len()))
}

/// Each active file with its remove action and how many of its rows `select` marks, read with
/// `columns` alone, READ_CONCURRENCY files at a time.
pub(crate) async fn marked_per_file(
    table: &DeltaTable,
    name: &str,
    columns: &[&str],
    select: RowFilter,
) -> Result<Vec<(object_store::path::Path, deltalake::kernel::Remove, u64)>> {
    let files: Vec<(object_store::path::Path, deltalake::kernel::Remove)> = table
        .snapshot()
        .map_err(|e| Error::delta(name, e))?
        .log_data()
        .into_iter()
        .map(|f| (f.object_store_path(), f.remove_action(true)))
        .collect();
    let paths: Vec<_> = files.iter().map(|(p, _)| p.clone()).collect();
    let wanted: Arc<Vec<String>> = Arc::new(columns.iter().map(|c| c.to_string()).collect());
    let marked: Vec<u64> = for_each_file(&table.object_store(), &paths, move |store, path| {
        let (select, wanted) = (select.clone(), wanted.clone());
        async move {
            let mut n = 0u64;
            for b in read_columns(store, &path, Some(&wanted)).await? {
                n += select(&b)?.true_count() as u64;
            }
            Ok(n)
        }
    })
    .await?;
    Ok(files.into_iter().zip(marked).map(|((p, r), n)| (p, r, n)).collect())
}

/// One file's rows, whole and rebuilt on the table's exact schema (files carry the table's
/// columns, maybe in another order): those `select` marks, or (`marked` false) the others.
pub(crate) async fn rows_of_file(
    table: &DeltaTable,
    schema: &SchemaRef,
    path: &object_store::path::Path,
    select: &RowFilter,
    marked: bool,
) -> Result<Vec<RecordBatch>> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut out = Vec::new();
    for b in read_columns(table.object_store(), path, None).await? {
        let mask = if marked { select(&b)? } else { arrow::compute::not(&select(&b)?)? };
        let b = in_order(&arrow::compute::filter_record_batch(&b, &mask)?, &names, path)?;
        out.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?);
    }
    Ok(out)
}

/// Marks the rows whose `ind` is in `inds` (it reads the `ind` column alone).
pub fn ind_in(name: &str, inds: Arc<std::collections::HashSet<i64>>) -> RowFilter {
    let table_path = object_store::path::Path::from(name);
    Arc::new(move |b: &RecordBatch| {
        Ok(ind_column(b, &table_path)?.iter().map(|i| Some(i.is_some_and(|i| inds.contains(&i)))).collect())
    })
}

/// The table's rows whose `ind` is in `inds`, as batches of the table's own schema: every
/// file is read with `ind` alone, and only files holding one of them are read whole.
pub async fn rows_with_inds(table: &DeltaTable, name: &str, inds: Arc<std::collections::HashSet<i64>>) -> Result<Vec<RecordBatch>> {
    let select = ind_in(name, inds);
    let schema = arrow_schema(table, name)?;
    let mut rows = Vec::new();
    for (path, _, n) in marked_per_file(table, name, &["ind"], select.clone()).await? {
        if n > 0 {
            let marked = rows_of_file(table, &schema, &path, &select, true).await?;
            rows.extend(marked.into_iter().filter(|b| b.num_rows() > 0));
        }
    }
    Ok(rows)
}

/// `delete_rows`, read again and retried when another writer committed first (appends by the
/// sinks while an operator deletes), `COMMIT_ATTEMPTS` times at most.
pub async fn delete_rows_retrying(
    table: &mut DeltaTable,
    name: &str,
    columns: &[&str],
    drop: RowFilter,
    commit: &DeleteCommit<'_>,
    dry_run: bool,
) -> Result<(u64, usize)> {
    let mut attempt = 1;
    loop {
        match delete_rows(table, name, columns, drop.clone(), commit, dry_run).await {
            Err(e) if e.is_conflict() && attempt < COMMIT_ATTEMPTS => {
                tracing::warn!(table = name, attempt, error = %e, "a delete lost a race with another writer: reading the table again");
                table.update_state().await.map_err(|e| Error::delta(name, e))?;
                attempt += 1;
            }
            done => return done,
        }
    }
}
