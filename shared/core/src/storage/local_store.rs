//! The local-disk store behind every `file://` Delta table: the local file system, except that
//! listing a `_delta_log` from a version looks the log's files up by name instead of reading the
//! whole directory.
//!
//! Why: after each commit deltalake brings its snapshot forward by listing the log from a
//! version. S3 answers that from the offset (`StartAfter`), but a local directory can only be
//! read whole, so on local disk every commit cost grew with the number of commits ever made
//! (10,000 commits: ~12 ms per table per batch, most of a batch's time). Commit files are
//! numbered without holes, so the files from version `v` on are `v.json`, `v+1.json`, … up to
//! the first that is missing, each with its single-file checkpoint when there is one; those
//! are found with one `stat` each.
//!
//! What a lookup cannot see, and why that is safe:
//! - multi-part and UUID-named checkpoints, compacted log files and `.crc` files (none of which
//!   pinpipe's writers make) are left out: they only let a reader skip commits, and the commits
//!   they summarise are listed, so the snapshot read is the same. The one reader that needs
//!   such a checkpoint, a load from a `_last_checkpoint` that names it, gets the directory
//!   read whole;
//! - when the first version asked for has neither a commit nor a checkpoint, and the version
//!   before it has no commit either (a log whose start was cleaned up, or a listing from
//!   version 0 without a `_last_checkpoint`), the directory is read whole, as before.
//!
//! It is also the store of every local landing and tables root (`Location::store`), where it
//! adds the one put mode the local file system lacks: `PutMode::Update`, a conditional replace
//! (S3's `If-Match`), which the forget ledger and landing rewrites use so that two writers
//! never silently overwrite each other. The check and the replace run under an exclusive
//! `flock` of the object's directory, so they are atomic against every other conditional
//! writer on the machine, in any process.
//!
//! Every other call, and every listing that is not of a `_delta_log` from a version, goes to
//! the local file system unchanged.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::logstore::{ObjectStoreFactory, ObjectStoreRef, StorageConfig};
use deltalake::{DeltaResult, DeltaTableError};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, ObjectStoreExt, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use url::Url;

/// The local file system rooted at `/`, with `_delta_log` listings by lookup (see the module).
#[derive(Debug)]
pub struct LocalDeltaStore {
    inner: LocalFileSystem,
}

impl fmt::Display for LocalDeltaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalDeltaStore({})", self.inner)
    }
}

impl Default for LocalDeltaStore {
    fn default() -> Self {
        LocalDeltaStore { inner: LocalFileSystem::new() }
    }
}

/// What a lookup of a log from a version found.
#[derive(Debug, PartialEq)]
enum LogLookup {
    /// The log's files from the version on, in listing order.
    Found(Vec<ObjectMeta>),
    /// The directory must be read whole: nothing at the first version and no commit just
    /// before it, or a checkpoint there that is not a single file.
    ReadWhole,
}

/// `(log directory, first version)` when `offset` names a version of the `_delta_log` that is
/// `prefix`, as the Delta kernel's listing from a version does (`_delta_log/{v:020}`).
fn log_listing_from(prefix: Option<&Path>, offset: &Path) -> Option<(Path, u64)> {
    let prefix = prefix?;
    if prefix.filename() != Some("_delta_log") {
        return None;
    }
    let mut rest = offset.prefix_match(prefix)?;
    let name = rest.next()?;
    if rest.next().is_some() || name.as_ref().len() != 20 || !name.as_ref().bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((prefix.clone(), name.as_ref().parse().ok()?))
}

impl LocalDeltaStore {
    /// The local file system under `prefix` (keys are relative to it), as `Location::store`
    /// hands out for a local root.
    pub fn with_prefix(prefix: &std::path::Path) -> Result<Self> {
        Ok(LocalDeltaStore { inner: LocalFileSystem::new_with_prefix(prefix)? })
    }

    /// `PutMode::Update`: replaces `location` only if its ETag is still `expected`, checked
    /// and replaced under an exclusive lock of its directory.
    async fn put_if_match(&self, location: &Path, payload: PutPayload, expected: Option<String>) -> Result<PutResult> {
        let file = self.inner.path_to_filesystem(location)?;
        let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let generic = |e: std::io::Error| object_store::Error::Generic { store: "LocalDeltaStore", source: Box::new(e) };
        let _lock = tokio::task::spawn_blocking(move || lock_dir(&dir))
            .await
            .map_err(|e| generic(std::io::Error::other(e)))?
            .map_err(generic)?;
        let precondition = |why: String| object_store::Error::Precondition { path: location.to_string(), source: why.into() };
        match self.inner.head(location).await {
            Ok(meta) if meta.e_tag.is_some() && meta.e_tag == expected => {}
            Ok(meta) => return Err(precondition(format!("ETag is {:?}, not {expected:?}", meta.e_tag))),
            Err(object_store::Error::NotFound { .. }) => return Err(precondition("the object is gone".into())),
            Err(e) => return Err(e),
        }
        self.inner.put_opts(location, payload, PutOptions::default()).await
    }
}

/// An exclusive `flock` of a directory, held until the file is dropped.
fn lock_dir(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    loop {
        // SAFETY: a valid open descriptor; flock does not touch memory.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn meta_of(log: &Path, name: String, md: &std::fs::Metadata) -> ObjectMeta {
    let last_modified = md.modified().map(chrono::DateTime::<chrono::Utc>::from).unwrap_or_default();
    ObjectMeta { location: log.clone().join(name), last_modified, size: md.len(), e_tag: None, version: None }
}

/// Looks the files of the log `log` (at `dir` on disk) up from version `from` on: each
/// version's single-file checkpoint and commit, until the first version with no commit.
fn lookup_log(log: &Path, dir: &std::path::Path, from: u64) -> std::io::Result<LogLookup> {
    let stat = |name: &str| match std::fs::metadata(dir.join(name)) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    let mut found = Vec::new();
    for v in from.. {
        // Listing order: `….checkpoint.parquet` sorts before `….json`.
        let checkpoint = format!("{v:020}.checkpoint.parquet");
        match stat(&checkpoint)? {
            Some(md) => found.push(meta_of(log, checkpoint, &md)),
            // `_last_checkpoint` names the first version, but its checkpoint is not a single
            // file (multi-part or UUID-named, as other tools write them): only the directory
            // shows its files.
            None if v == from && hinted_checkpoint(dir) == Some(from) => return Ok(LogLookup::ReadWhole),
            None => {}
        }
        let commit = format!("{v:020}.json");
        match stat(&commit)? {
            Some(md) => found.push(meta_of(log, commit, &md)),
            // A checkpoint whose own commit was cleaned up: the commits after it follow.
            None if v == from && !found.is_empty() => {}
            // Nothing at the first version: the log ends just before it when the version
            // before it is there (a reader asking for commits after its own); otherwise the
            // log's start may lie anywhere.
            None if v == from && found.is_empty() => {
                let ends_before = match from.checked_sub(1) {
                    Some(prev) => stat(&format!("{prev:020}.json"))?.is_some(),
                    None => false,
                };
                return Ok(if ends_before { LogLookup::Found(found) } else { LogLookup::ReadWhole });
            }
            None => break,
        }
    }
    Ok(LogLookup::Found(found))
}

/// The version `_delta_log/_last_checkpoint` names, if it is there and readable.
fn hinted_checkpoint(dir: &std::path::Path) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Hint {
        version: u64,
    }
    let bytes = std::fs::read(dir.join("_last_checkpoint")).ok()?;
    serde_json::from_slice::<Hint>(&bytes).ok().map(|h| h.version)
}

#[async_trait::async_trait]
impl ObjectStore for LocalDeltaStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if let object_store::PutMode::Update(v) = &opts.mode {
            return self.put_if_match(location, payload, v.e_tag.clone()).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        let Some((log, from)) = log_listing_from(prefix, offset) else {
            return self.inner.list_with_offset(prefix, offset);
        };
        let Ok(dir) = self.inner.path_to_filesystem(&log) else {
            return self.inner.list_with_offset(prefix, offset);
        };
        let inner_listing = self.inner.list_with_offset(prefix, offset);
        stream::once(async move {
            // The lookups are blocking `stat`s: one trip to the blocking pool for all of them
            // (in place when polled outside a tokio runtime, as `LocalFileSystem` does).
            let looked = match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::spawn_blocking(move || lookup_log(&log, &dir, from))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e))),
                Err(_) => lookup_log(&log, &dir, from),
            };
            match looked {
                Ok(LogLookup::Found(found)) => stream::iter(found.into_iter().map(Ok)).boxed(),
                Ok(LogLookup::ReadWhole) => inner_listing,
                Err(e) => {
                    let err = object_store::Error::Generic { store: "LocalDeltaStore", source: Box::new(e) };
                    stream::once(async { Err(err) }).boxed()
                }
            }
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// Makes deltalake open every `file://` table on [`LocalDeltaStore`].
#[derive(Debug, Default)]
struct LocalDeltaStoreFactory;

impl ObjectStoreFactory for LocalDeltaStoreFactory {
    fn parse_url_opts(&self, url: &Url, _config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::InvalidTableLocation(format!("{url}: {e}")))?;
        Ok((Arc::new(LocalDeltaStore::default()), path))
    }
}

/// Registers [`LocalDeltaStore`] for `file://` tables (called once, from `storage::init`).
pub(crate) fn register() {
    if let Ok(scheme) = Url::parse("file://") {
        deltalake::logstore::object_store_factories().insert(scheme, Arc::new(LocalDeltaStoreFactory));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::landing::SourceRecords;
    use crate::names::PipelineId;
    use crate::writer::Tables;
    use crate::{delta, jobs::maintenance, Kind};
    use futures::TryStreamExt;

    /// The lookup's answer, as names, and the names the whole directory's listing gives for the
    /// files a lookup can see (commits and single-file checkpoints).
    async fn both(log: &Path, dir: &std::path::Path, from: u64) -> (Option<Vec<String>>, Vec<String>) {
        let looked = match lookup_log(log, dir, from).unwrap() {
            LogLookup::Found(f) => Some(f.iter().map(|m| m.location.filename().unwrap_or("").to_string()).collect()),
            LogLookup::ReadWhole => None,
        };
        let offset = log.clone().join(format!("{from:020}"));
        let mut listed: Vec<String> = LocalFileSystem::new()
            .list_with_offset(Some(log), &offset)
            .map_ok(|m| m.location.filename().unwrap_or("").to_string())
            .try_collect()
            .await
            .unwrap();
        listed.retain(|n| {
            let (v, ext) = n.split_once('.').unwrap_or((n, ""));
            v.len() == 20 && v.bytes().all(|b| b.is_ascii_digit()) && (ext == "json" || ext == "checkpoint.parquet")
        });
        listed.sort();
        (looked, listed)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn lookup_equals_the_directory_listing_and_tables_read_the_same() {
        let (dir, root) = crate::storage::test_root("local-log");
        let id = PipelineId::new("t").unwrap();
        let name = id.table(Kind::User);
        let mut tables = Tables::open(&root, &id).await.unwrap();
        let write = |c: u64| {
            let rec = format!(r#"{{"ind":{c},"first_name":"Ann","last_name":"Lee","age":"{}","date_joined":"2016-03-08 09:14:00"}}"#, 20 + c % 50).into_bytes();
            SourceRecords::from_records("t.user", "0", [(c as i64, (c as i64).into(), rec.into())])
        };
        for c in 0..25 {
            tables.write(Kind::User, vec![write(c)]).await.unwrap();
            if c == 11 {
                let table = delta::open(&root, &name).await.unwrap().unwrap();
                maintenance::checkpoint(&table, &name, 1).await.unwrap();
            }
        }
        let table = delta::open(&root, &name).await.unwrap().unwrap();
        assert!(table.log_store().root_object_store(None).to_string().contains("LocalDeltaStore"));
        let latest = table.version().unwrap();
        let log_dir = dir.join(&name).join("_delta_log");
        let log = Path::from_absolute_path(&log_dir).unwrap();
        for from in 0..=latest + 1 {
            let (looked, listed) = both(&log, &log_dir, from).await;
            assert_eq!(looked.as_ref(), Some(&listed), "from version {from}");
        }
        // Past the log's end nothing tells where the log is: the directory is read.
        assert_eq!(lookup_log(&log, &log_dir, latest + 2).unwrap(), LogLookup::ReadWhole);
        let rows = |t: &deltalake::DeltaTable| t.snapshot().unwrap().log_data().into_iter().count();
        let files = rows(&table);

        // The log's start cleaned up (commits before the checkpoint gone): a lookup from the
        // checkpoint finds it; one from version 0 finds nothing there and reads the directory.
        let checkpoint = delta::last_checkpoint(&table, &name).await.unwrap().unwrap().version;
        for v in 0..checkpoint {
            std::fs::remove_file(log_dir.join(format!("{v:020}.json"))).unwrap();
        }
        assert_eq!(lookup_log(&log, &log_dir, 0).unwrap(), LogLookup::ReadWhole);
        for from in checkpoint..=latest + 1 {
            let (looked, listed) = both(&log, &log_dir, from).await;
            assert_eq!(looked.as_ref(), Some(&listed), "from version {from} after cleanup");
        }
        // Another tool's multi-part checkpoint at the hinted version, in place of the single
        // file: the lookup leaves it to the directory's listing, which shows its parts.
        let single = log_dir.join(format!("{checkpoint:020}.checkpoint.parquet"));
        let parts = [1, 2].map(|p| log_dir.join(format!("{checkpoint:020}.checkpoint.{p:010}.{:010}.parquet", 2)));
        std::fs::rename(&single, &parts[0]).unwrap();
        std::fs::copy(&parts[0], &parts[1]).unwrap();
        assert_eq!(lookup_log(&log, &log_dir, checkpoint).unwrap(), LogLookup::ReadWhole);
        assert!(matches!(lookup_log(&log, &log_dir, checkpoint + 1).unwrap(), LogLookup::Found(_)));
        std::fs::remove_file(&parts[1]).unwrap();
        std::fs::rename(&parts[0], &single).unwrap();
        // The checkpoint's own commit gone too.
        std::fs::remove_file(log_dir.join(format!("{checkpoint:020}.json"))).unwrap();
        let (looked, listed) = both(&log, &log_dir, checkpoint).await;
        assert!(listed.len() > 2);
        assert_eq!(looked.as_ref(), Some(&listed), "from the checkpoint without its commit");
        let reopened = delta::open(&root, &name).await.unwrap().unwrap();
        assert_eq!((reopened.version(), rows(&reopened)), (Some(latest), files));
        // Writing on goes on from the same state, and the watermark is read back.
        tables.refresh().await.unwrap();
        tables.write(Kind::User, vec![write(25)]).await.unwrap();
        let after = delta::open(&root, &name).await.unwrap().unwrap();
        assert_eq!(after.version(), Some(latest + 1));
        assert_eq!(delta::txn_version(&after, &name, &crate::storage::landing::app_id("t.user", "0")).await.unwrap(), Some(25));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
