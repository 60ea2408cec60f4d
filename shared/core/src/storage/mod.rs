//! Storage locations: a local path or an `s3://` URL, for the landing and the Delta tables.
//! S3 settings come from the standard AWS environment (`AWS_ENDPOINT_URL` for a local S3).

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use url::Url;

use crate::error::{Error, Result};

pub mod kinesis_landing;
pub mod landing;
pub mod local_store;

/// A root location: where landing objects, tables or reports live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    url: Url,
}

impl Location {
    /// Parses `s3://bucket/prefix` or a local path (created if missing, made absolute).
    pub fn parse(s: &str) -> Result<Self> {
        if s.starts_with("s3://") || s.starts_with("s3a://") {
            let url = Url::parse(s).map_err(|e| Error::input(s, format!("not a valid URL: {e}")))?;
            if url.host_str().unwrap_or("").is_empty() {
                return Err(Error::input(s, "an s3:// URL needs a bucket (s3://bucket/prefix)"));
            }
            return Ok(Location { url });
        }
        if s.contains("://") {
            return Err(Error::input(s, "only local paths and s3:// URLs are supported"));
        }
        let path = FsPath::new(s);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Io { path: s.into(), source: e })?
                .join(path)
        };
        let url = Url::from_directory_path(&abs)
            .map_err(|_| Error::input(s, "cannot be turned into a file URL"))?;
        Ok(Location { url })
    }

    /// An existing local directory or any S3 URL (S3 is checked when read).
    pub fn parse_existing(s: &str) -> Result<Self> {
        let loc = Self::parse(s)?;
        if let Some(p) = loc.local_path() {
            if !p.is_dir() {
                let why = if p.exists() { "is not a directory" } else { "does not exist" };
                return Err(Error::input(s, why));
            }
        }
        Ok(loc)
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn is_local(&self) -> bool {
        self.url.scheme() == "file"
    }

    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        if self.is_local() {
            self.url.to_file_path().ok()
        } else {
            None
        }
    }

    /// A child location (`tables/<name>`).
    pub fn join(&self, name: &str) -> Location {
        let mut s = self.url.as_str().trim_end_matches('/').to_string();
        s.push('/');
        s.push_str(name);
        s.push('/');
        Location { url: Url::parse(&s).unwrap_or_else(|_| self.url.clone()) }
    }

    /// Display form: the local path or the URL.
    pub fn display(&self) -> String {
        match self.local_path() {
            Some(p) => p.display().to_string(),
            None => self.url.to_string(),
        }
    }

    /// An object store rooted at this location (keys are relative to it).
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        if let Some(p) = self.local_path() {
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::Io { path: p.display().to_string(), source: e })?;
            let fs = local_store::LocalDeltaStore::with_prefix(&p)
                .map_err(|e| Error::Storage { location: self.display(), source: e })?;
            return Ok(Arc::new(fs));
        }
        let bucket = self.url.host_str().unwrap_or_default();
        let s3 = s3_builder()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| Error::Storage { location: self.display(), source: e })?;
        let prefix = self.url.path().trim_matches('/');
        if prefix.is_empty() {
            Ok(Arc::new(s3))
        } else {
            Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, Path::from(prefix))))
        }
    }
}

/// How many times a conditional replace is retried before giving up: each retry means another
/// writer changed the object in between, which on these keys (the forget ledger, landing
/// objects) happens a handful of times at most.
pub(crate) const UPDATE_ATTEMPTS: usize = 64;

/// Reads `key` with the version a conditional replace must match; `None` when it is not there.
pub async fn get_versioned(store: &Arc<dyn ObjectStore>, key: &Path) -> Result<Option<(bytes::Bytes, UpdateVersion)>> {
    let storage = |e| Error::Storage { location: key.to_string(), source: e };
    match store.get(key).await {
        Ok(got) => {
            let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
            Ok(Some((got.bytes().await.map_err(storage)?, version)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// Writes `body` at `key` only if the object is still the one read (`read`: its version, or
/// `None` when it was absent and must still be). `Ok(false)`: another writer changed it first;
/// read it again and decide again.
pub async fn put_if_unchanged(store: &Arc<dyn ObjectStore>, key: &Path, read: Option<UpdateVersion>, body: PutPayload) -> Result<bool> {
    let mode = match read {
        Some(v) => PutMode::Update(v),
        None => PutMode::Create,
    };
    match store.put_opts(key, body, mode.into()).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(Error::Storage { location: key.to_string(), source: e }),
    }
}

/// Read-modify-write of one object without lost updates: `change` gets the current bytes
/// (`None`: absent) and returns the new ones, or `None` to leave the object as it is; the
/// write is conditional on the object being unchanged since the read, and on a conflict the
/// object is read and `change` asked again. Returns whether it wrote.
pub async fn update_object<F>(store: &Arc<dyn ObjectStore>, key: &Path, mut change: F) -> Result<bool>
where
    F: FnMut(Option<&bytes::Bytes>) -> Result<Option<Vec<u8>>>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let read = get_versioned(store, key).await?;
        let Some(body) = change(read.as_ref().map(|(b, _)| b))? else { return Ok(false) };
        if put_if_unchanged(store, key, read.map(|(_, v)| v), PutPayload::from(body)).await? {
            return Ok(true);
        }
    }
    Err(Error::input(key.to_string(), format!("changed by other writers {UPDATE_ATTEMPTS} times in a row; run again")))
}

/// S3 client settings from the environment; a local S3 (moto) needs path-style and plain HTTP.
fn s3_builder() -> AmazonS3Builder {
    let mut b = AmazonS3Builder::from_env();
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL")) {
        let http = endpoint.starts_with("http://");
        b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        if http {
            b = b.with_allow_http(true);
        }
    }
    b
}

/// Storage options for deltalake, mirroring `s3_builder` so both clients hit the same S3.
pub fn delta_storage_options() -> HashMap<String, String> {
    let mut opts = HashMap::new();
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_S3").or_else(|_| std::env::var("AWS_ENDPOINT_URL")) {
        if endpoint.starts_with("http://") {
            opts.insert("AWS_ALLOW_HTTP".into(), "true".into());
        }
        opts.insert("AWS_ENDPOINT_URL".into(), endpoint);
        opts.insert("AWS_S3_ADDRESSING_STYLE".into(), "path".into());
        opts.insert("AWS_FORCE_PATH_STYLE".into(), "true".into());
    }
    opts
}

/// Registers deltalake's S3 handlers and pinpipe's local-disk store once per process (needed
/// before any table opens).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        crate::storage::local_store::register();
    });
}

/// A fresh directory for one test, `pinpipe-<tag>-<pid>` under the temp dir (emptied if a
/// previous run left it), and its location.
#[cfg(test)]
pub(crate) fn test_root(tag: &str) -> (std::path::PathBuf, Location) {
    let dir = std::env::temp_dir().join(format!("pinpipe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = Location::parse(dir.to_str().expect("temp dir is UTF-8")).expect("temp dir is a location");
    (dir, root)
}

/// A store that lets another writer's put land just before one of ours: the interleaving a
/// read-modify-write must survive, made certain instead of left to timing.
#[cfg(test)]
pub(crate) mod racing {
    use std::sync::Mutex;

    use futures::stream::BoxStream;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutOptions,
        PutResult, RenameOptions,
    };

    use super::*;

    #[derive(Debug)]
    pub struct RacingStore {
        pub inner: Arc<dyn ObjectStore>,
        /// Bodies other writers put at a key, one just before each of our next puts there.
        pub races: Mutex<Vec<(Path, Vec<u8>)>>,
    }

    impl std::fmt::Display for RacingStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "RacingStore({})", self.inner)
        }
    }

    impl RacingStore {
        pub fn wrap(inner: Arc<dyn ObjectStore>, races: Vec<(Path, Vec<u8>)>) -> Arc<dyn ObjectStore> {
            Arc::new(RacingStore { inner, races: Mutex::new(races) })
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for RacingStore {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
            let race = {
                let mut races = self.races.lock().expect("not poisoned");
                races.iter().position(|(k, _)| k == location).map(|i| races.remove(i))
            };
            if let Some((key, body)) = race {
                self.inner.put(&key, PutPayload::from(body)).await?;
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
        async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
            self.inner.rename_opts(from, to, options).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local root's store replaces an object conditionally, as S3's If-Match does: only
    /// while its ETag is the one read.
    #[tokio::test(flavor = "multi_thread")]
    async fn local_conditional_replace_refuses_a_changed_or_missing_object() {
        let (dir, root) = test_root("cas");
        let store = root.store().unwrap();
        let key = Path::from("a/ledger.json");
        assert!(put_if_unchanged(&store, &key, None, PutPayload::from_static(b"1")).await.unwrap());
        assert!(!put_if_unchanged(&store, &key, None, PutPayload::from_static(b"x")).await.unwrap(), "created twice");
        let (_, v1) = get_versioned(&store, &key).await.unwrap().unwrap();
        assert!(put_if_unchanged(&store, &key, Some(v1.clone()), PutPayload::from_static(b"12")).await.unwrap());
        assert!(!put_if_unchanged(&store, &key, Some(v1.clone()), PutPayload::from_static(b"1x")).await.unwrap(), "stale ETag");
        assert_eq!(get_versioned(&store, &key).await.unwrap().unwrap().0.as_ref(), b"12");
        store.delete(&key).await.unwrap();
        assert!(!put_if_unchanged(&store, &key, Some(v1), PutPayload::from_static(b"1y")).await.unwrap(), "gone");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Writers appending to one object at once, each a read-modify-write: none is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_all_land() {
        let (dir, root) = test_root("cas-many");
        let key = Path::from("counter");
        let tasks: Vec<_> = (0..8u8)
            .map(|w| {
                let root = root.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let store = root.store().unwrap();
                    for _ in 0..25 {
                        update_object(&store, &key, |cur| {
                            let mut v = cur.map(|b| b.to_vec()).unwrap_or_default();
                            v.push(b'a' + w);
                            Ok(Some(v))
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let body = get_versioned(&root.store().unwrap(), &key).await.unwrap().unwrap().0;
        assert_eq!(body.len(), 200, "updates were lost");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn parses_local_and_s3() {
        let l = Location::parse("/tmp/x").unwrap();
        assert!(l.is_local());
        assert_eq!(l.join("t").url().as_str(), "file:///tmp/x/t/");
        let s = Location::parse("s3://bucket/tables").unwrap();
        assert!(!s.is_local());
        assert_eq!(s.join("demo_pin_table").url().as_str(), "s3://bucket/tables/demo_pin_table/");
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://b/x").is_err());
        assert!(Location::parse_existing("/definitely/not/here").is_err());
    }
}
