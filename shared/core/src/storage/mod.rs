//! Storage locations: a local path or an `s3://` URL, for the landing and the Delta tables.
//! S3 settings come from the standard AWS environment (`AWS_ENDPOINT_URL` for a local S3).

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;
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
            let fs = LocalFileSystem::new_with_prefix(&p)
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

#[cfg(test)]
mod tests {
    use super::*;

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
