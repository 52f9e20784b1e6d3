//! Object storage: `s3://bucket/key` paths for inputs and output, through
//! the `object_store` crate DataFusion uses.
//!
//! Credentials and the endpoint come from the environment, as every AWS
//! tool reads them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...), never from
//! the spec. An `http://` endpoint (a local S3-compatible server) is
//! allowed without TLS.
//!
//! Inputs are copied to a local scratch folder before they are read (the
//! readers cut CSV files into blocks, read Parquet row groups on every
//! core and read a bad row's line again for its message: all of that wants
//! a local file); the copies are removed with the build's staging. An
//! output is written locally and uploaded under a run-unique prefix, then
//! published by the manifest (see [`crate::write::remote`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// Schemes leakless reads and writes.
const SCHEMES: [&str; 2] = ["s3://", "s3a://"];

/// Parts of a file uploaded at once in a multipart upload, and the size of
/// a part (S3's minimum is 5 MiB but for the last).
const UPLOADS_AT_ONCE: usize = 4;
const PART_BYTES: usize = 16 << 20;

/// What of an object [`Remote::download`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// The first [`HEAD_BYTES`] (a CSV header).
    Head,
    /// The Parquet footer: the last [`FOOTER_BYTES`], and more when the
    /// metadata is longer.
    ParquetFooter,
}

/// Bytes of a CSV file's head, and of a Parquet file's tail, read for its
/// columns.
const HEAD_BYTES: u64 = 1 << 20;
const FOOTER_BYTES: u64 = 64 << 10;

/// Objects downloaded or uploaded at once.
const TRANSFERS_AT_ONCE: usize = 8;

/// A path on object storage: a bucket's store and a key (no leading or
/// trailing `/`; empty for the bucket's root).
#[derive(Clone)]
pub struct Remote {
    /// `s3://bucket/key` as the user wrote it (trailing `/` removed).
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub key: Key,
    bucket: String,
    scheme: &'static str,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// Whether `path` names object storage (`scheme://...`), as opposed to a
/// local file.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.contains("://"))
}

impl Remote {
    /// The object store `path` names, or `None` for a local path; its
    /// settings from the environment.
    pub fn parse(path: &Path) -> Result<Option<Remote>> {
        Remote::parse_with(path, &[])
    }

    /// [`Remote::parse`], with settings that override the environment's,
    /// by `object_store`'s names (`aws_endpoint`, `aws_access_key_id`,
    /// `aws_region`, ...).
    pub fn parse_with(path: &Path, options: &[(&str, &str)]) -> Result<Option<Remote>> {
        if !is_remote(path) {
            return Ok(None);
        }
        let text = path.to_str().expect("is_remote checked UTF-8");
        let Some(scheme) = SCHEMES.into_iter().find(|s| text.starts_with(s)) else {
            return Err(Error::Invalid(format!(
                "`{text}`: leakless reads and writes local paths and `s3://bucket/key` \
                 (other object stores are not supported yet)"
            )));
        };
        let rest = text[scheme.len()..].trim_end_matches('/');
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!("`{text}` names no bucket")));
        }
        let key = Key::parse(key).map_err(|e| Error::Invalid(format!("`{text}`: {e}")))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key = key
                .parse()
                .map_err(|e| Error::Invalid(format!("`{text}`: option `{key}`: {e}")))?;
            builder = builder.with_config(key, *value);
        }
        let endpoint = [AmazonS3ConfigKey::S3Endpoint, AmazonS3ConfigKey::Endpoint]
            .iter()
            .find_map(|k| builder.get_config_value(k));
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        let store = builder
            .build()
            .map_err(|e| Error::Invalid(format!("`{text}`: {e}")))?;
        Ok(Some(Remote {
            url: format!("{scheme}{rest}"),
            store: Arc::new(store),
            key,
            bucket: bucket.to_owned(),
            scheme,
        }))
    }

    /// The same store at `key`.
    pub fn at(&self, key: Key) -> Remote {
        Remote {
            url: self.url_of(&key),
            store: self.store.clone(),
            key,
            bucket: self.bucket.clone(),
            scheme: self.scheme,
        }
    }

    /// `s3://bucket/key` of a key in this bucket.
    pub fn url_of(&self, key: &Key) -> String {
        match key.as_ref() {
            "" => format!("{}{}", self.scheme, self.bucket),
            k => format!("{}{}/{k}", self.scheme, self.bucket),
        }
    }

    /// The key of `url`, an object in this bucket.
    pub fn key_of(&self, url: &str) -> Option<Key> {
        let rest = url.strip_prefix(self.scheme)?.strip_prefix(&self.bucket)?;
        match rest {
            "" => Some(Key::default()),
            rest => Key::parse(rest.strip_prefix('/')?).ok(),
        }
    }

    /// The key `name` below this one (`name` may hold `/`).
    pub fn child(&self, name: &str) -> Key {
        let mut key = self.key.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            key = key.join(part);
        }
        key
    }

    /// An I/O error on `key`, naming its URL.
    pub fn error(&self, doing: &'static str, key: &Key, e: object_store::Error) -> Error {
        Error::io(
            doing,
            Path::new(&self.url_of(key)),
            std::io::Error::other(e.to_string()),
        )
    }

    /// Every object below this key as a folder, or the key itself when it
    /// is an object, as (key, size), in key order. An empty object whose
    /// key is also a folder is a folder marker (as consoles create them)
    /// and left out; a non-empty object that is also a folder is an error.
    pub async fn list(&self) -> Result<Vec<(Key, u64)>> {
        let below = self.list_below(&self.key).await?;
        if self.key.as_ref().is_empty() {
            return Ok(below);
        }
        match self.store.head(&self.key).await {
            Ok(meta) if meta.size == 0 && !below.is_empty() => Ok(below),
            Ok(_) if !below.is_empty() => Err(Error::Invalid(format!(
                "`{}` is both an object and a folder of objects: name one of them",
                self.url
            ))),
            Ok(meta) => Ok(vec![(meta.location, meta.size)]),
            Err(object_store::Error::NotFound { .. }) => Ok(below),
            Err(e) => Err(self.error("reading", &self.key, e)),
        }
    }

    /// Every object below `prefix` (folder markers, empty objects whose
    /// key is a folder of others, left out), as (key, size), in key order.
    pub async fn list_below(&self, prefix: &Key) -> Result<Vec<(Key, u64)>> {
        let found = self.list_meta(prefix).await?;
        // Every folder of every key, at any depth, and the prefix itself.
        let mut folders: std::collections::HashSet<&str> = Default::default();
        folders.insert(prefix.as_ref());
        for meta in &found {
            let key = meta.location.as_ref();
            folders.extend(key.match_indices('/').map(|(at, _)| &key[..at]));
        }
        Ok(found
            .iter()
            .filter(|m| !(m.size == 0 && folders.contains(m.location.as_ref())))
            .map(|m| (m.location.clone(), m.size))
            .collect())
    }

    /// Every object below `prefix` with its metadata, in key order.
    pub async fn list_meta(&self, prefix: &Key) -> Result<Vec<object_store::ObjectMeta>> {
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut found: Vec<object_store::ObjectMeta> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.error("listing", &self.key, e))?;
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }

    /// Copies objects (key, local file, size, which part) to local files,
    /// `TRANSFERS_AT_ONCE` at a time, each streamed to its file (never whole
    /// in memory). A part short of the whole goes into a sparse file of the
    /// object's size, at its offset: readers of a CSV header or a Parquet
    /// footer find what they read where they read it.
    pub async fn download(&self, objects: Vec<(Key, PathBuf, u64, Part)>) -> Result<()> {
        futures::stream::iter(objects)
            .map(|(key, local, size, part)| async move {
                if let Some(dir) = local.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
                }
                let mut file =
                    std::fs::File::create(&local).map_err(|e| Error::io("creating", &local, e))?;
                match part {
                    Part::Whole => {
                        let mut stream = self
                            .store
                            .get(&key)
                            .await
                            .map_err(|e| self.error("reading", &key, e))?
                            .into_stream();
                        while let Some(chunk) = stream.next().await {
                            let chunk = chunk.map_err(|e| self.error("reading", &key, e))?;
                            std::io::Write::write_all(&mut file, &chunk)
                                .map_err(|e| Error::io("writing", &local, e))?;
                        }
                    }
                    Part::Head => {
                        file.set_len(size)
                            .map_err(|e| Error::io("writing", &local, e))?;
                        self.copy_range(&key, &file, &local, 0..size.min(HEAD_BYTES))
                            .await?;
                    }
                    Part::ParquetFooter => {
                        file.set_len(size)
                            .map_err(|e| Error::io("writing", &local, e))?;
                        let from = size.saturating_sub(FOOTER_BYTES);
                        let tail = self.copy_range(&key, &file, &local, from..size).await?;
                        // The last 8 bytes: the metadata's length, then
                        // `PAR1`; anything else is left to the reader to
                        // report (a corrupt or misnamed file).
                        if tail.len() >= 8 && tail.ends_with(b"PAR1") {
                            let at = tail.len() - 8;
                            let length =
                                u32::from_le_bytes(tail[at..at + 4].try_into().expect("4 bytes"));
                            let start = size.checked_sub(u64::from(length) + 8).unwrap_or(from);
                            if start < from {
                                self.copy_range(&key, &file, &local, start..from).await?;
                            }
                        }
                    }
                }
                Ok::<_, Error>(())
            })
            .buffer_unordered(TRANSFERS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Bytes `range` of the object at `key`, written into `file` at their
    /// offset; returns them.
    async fn copy_range(
        &self,
        key: &Key,
        file: &std::fs::File,
        local: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let start = range.start;
        let bytes = self
            .store
            .get_range(key, range)
            .await
            .map_err(|e| self.error("reading", key, e))?;
        file.write_all_at(&bytes, start)
            .map_err(|e| Error::io("writing", local, e))?;
        Ok(bytes.to_vec())
    }

    /// Uploads local files to keys, `TRANSFERS_AT_ONCE` at a time; a file
    /// larger than a part goes up in parts.
    pub async fn upload(&self, files: Vec<(PathBuf, Key)>) -> Result<()> {
        futures::stream::iter(files)
            .map(|(local, key)| async move { self.upload_one(&local, &key).await })
            .buffer_unordered(TRANSFERS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn upload_one(&self, local: &Path, key: &Key) -> Result<()> {
        use std::io::Read;
        let size = std::fs::metadata(local)
            .map_err(|e| Error::io("reading", local, e))?
            .len();
        if size <= PART_BYTES as u64 {
            let bytes = std::fs::read(local).map_err(|e| Error::io("reading", local, e))?;
            self.store
                .put(key, bytes.into())
                .await
                .map_err(|e| self.error("writing", key, e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| self.error("writing", key, e))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut file = std::fs::File::open(local).map_err(|e| Error::io("reading", local, e))?;
        let mut buffer = vec![0u8; PART_BYTES];
        let mut failed = None;
        loop {
            let n = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    failed = Some(Error::io("reading", local, e));
                    break;
                }
            };
            if let Err(e) = writer.wait_for_capacity(UPLOADS_AT_ONCE).await {
                failed = Some(self.error("writing", key, e));
                break;
            }
            writer.write(&buffer[..n]);
        }
        // A failed upload is aborted: its parts are not left on the store.
        if let Some(e) = failed {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.error("writing", key, e))?;
        Ok(())
    }

    /// Deletes every object below `prefix`; best effort (what cannot be
    /// deleted is left for the next run to find).
    pub async fn delete_below(&self, prefix: &Key) {
        let Ok(found) = self.list_below(prefix).await else {
            return;
        };
        let keys = futures::stream::iter(found.into_iter().map(|(k, _)| Ok(k))).boxed();
        let _ = self.store.delete_stream(keys).try_collect::<Vec<_>>().await;
    }
}

/// The runtime that drives object storage's I/O for every [`block_on`]:
/// one for the process, so that the HTTP connections a store pools stay
/// usable from one call to the next.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("leakless-storage")
            .enable_all()
            .build()
            .expect("a Tokio runtime starts")
    })
}

/// Runs `future` to completion for synchronous code, whether or not it
/// runs inside a Tokio runtime: on a thread of its own, with the I/O
/// driven by the process's storage runtime.
pub fn block_on<F: Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    let handle = io_runtime().handle().clone();
    std::thread::scope(|scope| {
        scope
            .spawn(move || handle.block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A local folder of the run's own under the system's temporary folder
/// (`TMPDIR`), removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
    /// Holds the `flock` on `dir/.lock`.
    _lock: std::fs::File,
}

impl Scratch {
    /// Removes the `TMPDIR/leakless-*` folders no live run holds.
    pub fn remove_dead() {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let ours = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("leakless-"));
                let lock = entry.path().join(".lock");
                let dead =
                    ours && std::fs::File::open(&lock).is_ok_and(|file| file.try_lock().is_ok());
                if dead {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// `TMPDIR/leakless-PURPOSE-RANDOM`, locked by this run (`flock` on its
    /// `.lock`) until dropped; first removes such folders that no live run
    /// holds (the leftovers of a run killed with `kill -9`; the kernel drops
    /// a dead process's lock, whatever its pid namespace).
    pub fn new(purpose: &str) -> Result<Scratch> {
        use std::hash::{BuildHasher, Hasher};
        Scratch::remove_dead();
        let tmp = std::env::temp_dir();
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let name = format!("leakless-{purpose}-{:016x}", hasher.finish());
        // Locked under another name first, then renamed: a `leakless-*`
        // folder never exists unlocked while its run lives.
        let making = tmp.join(format!(".{name}"));
        std::fs::create_dir_all(&making).map_err(|e| Error::io("creating", &making, e))?;
        let lock_path = making.join(".lock");
        let lock = std::fs::File::create(&lock_path)
            .and_then(|file| {
                file.try_lock()
                    .map(|()| file)
                    .map_err(std::io::Error::other)
            })
            .map_err(|e| Error::io("locking", &lock_path, e))?;
        let dir = tmp.join(name);
        std::fs::rename(&making, &dir).map_err(|e| Error::io("creating", &dir, e))?;
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_folder_is_removed_when_dropped_or_when_its_run_is_gone() {
        let live = Scratch::new("test-live").unwrap();
        let live_dir = live.dir().to_owned();
        assert!(live_dir.join(".lock").is_file());
        // A run killed with `kill -9` leaves its folder, with its lock file
        // no longer locked.
        let dead_dir =
            std::env::temp_dir().join(format!("leakless-test-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dead_dir).unwrap();
        std::fs::write(dead_dir.join(".lock"), "").unwrap();
        std::fs::write(dead_dir.join("data"), "left").unwrap();
        // The next scratch removes the dead run's folder, not the live one's.
        let next = Scratch::new("test-next").unwrap();
        assert!(!dead_dir.exists());
        assert!(live_dir.is_dir());
        drop(live);
        assert!(!live_dir.exists());
        drop(next);
    }

    #[test]
    fn urls_parse_into_bucket_and_key() {
        assert!(Remote::parse(Path::new("data/views")).unwrap().is_none());
        let r = Remote::parse(Path::new("s3://logs/2026/views/"))
            .unwrap()
            .unwrap();
        assert_eq!(r.url, "s3://logs/2026/views");
        assert_eq!(r.key.as_ref(), "2026/views");
        assert_eq!(
            r.url_of(&r.child("a/b.csv")),
            "s3://logs/2026/views/a/b.csv"
        );
        let root = Remote::parse(Path::new("s3://logs")).unwrap().unwrap();
        assert_eq!(root.key.as_ref(), "");
        assert_eq!(root.url_of(&root.key), "s3://logs");
        for bad in ["s3:///x", "gs://bucket/x", "ftp://host/x"] {
            let err = Remote::parse(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
