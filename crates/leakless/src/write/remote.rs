//! Publishing a dataset to object storage, which has no rename and no
//! lock.
//!
//! The protocol (also in `docs/semantics.md`), for `--out s3://B/DS`:
//! 1. The run reads `DS/_manifest.json` once, before any work: absent, or
//!    written by leakless (else the run is refused, as a local folder
//!    would be), and then only with `--overwrite`. It keeps the object's
//!    version (its ETag).
//! 2. The data is written to a local staging folder, then uploaded under
//!    `DS/_runs/RUN/` (`RUN` random per run): the same relative paths a
//!    local dataset has. Nothing outside `_runs/RUN/` is touched.
//! 3. The manifest, naming `"data": "_runs/RUN"`, is put last with a
//!    condition: that no manifest exists (a first build), or that it is
//!    still the version read in step 1. A run that finds the condition
//!    broken (another run published meanwhile) fails and publishes nothing;
//!    its `_runs/RUN/` is left for the next publish to delete. The manifest
//!    names its run, so two runs' manifests never have the same bytes, nor
//!    the same ETag (S3's ETag of a single-part object is the MD5 of its
//!    bytes: two equal manifests would let a stale `If-Match` pass).
//! 4. After the publish, every `_runs/*` but this run's and the one the
//!    previous manifest named, and whose newest object is older than the
//!    manifest just put (the store's clock), is deleted: a reader that read
//!    the previous manifest can still read its data, and a run that read
//!    the manifest after this put (and may publish) is not touched. A put
//!    that fails is checked against the manifest the store holds: a retry
//!    after a lost reply may have published it.
//!
//! A reader reads `_manifest.json` and then the files below its `data`:
//! it sees the previous dataset or the new one, never a mix. Listing `DS/`
//! shows only the manifest, as `_runs` starts with `_` (Spark, pyarrow and
//! Polars skip it). A run killed before step 3 leaves `_runs/RUN/`, which
//! the next successful publish deletes.

use std::path::{Path, PathBuf};

use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};

use super::manifest;
use crate::error::{Error, Result};
use crate::storage::{Remote, Scratch, block_on};

/// The folder below the dataset that holds each run's data.
pub const RUNS: &str = "_runs";

/// The right to publish to a dataset on object storage.
#[derive(Debug)]
pub struct RemoteDestination {
    remote: Remote,
    run: String,
    /// The manifest found, as its version and the data folder it names.
    previous: Option<(UpdateVersion, String)>,
}

impl RemoteDestination {
    /// Reads what is at `remote` and checks that it may be written.
    pub fn acquire(remote: Remote, run: String, overwrite: bool) -> Result<RemoteDestination> {
        let manifest_key = remote.child(manifest::FILE_NAME);
        let found = block_on(async {
            match remote.store.get(&manifest_key).await {
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = (got.bytes().await)
                        .map_err(|e| remote.error("reading", &manifest_key, e))?;
                    Ok(Some((version, bytes)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote.error("reading", &manifest_key, e)),
            }
        })?;
        let path = PathBuf::from(&remote.url);
        let previous = match found {
            Some((version, bytes)) => {
                let data = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Ok(m) if m.get("tool").and_then(|t| t.as_str()) == Some(manifest::TOOL) => {
                        match m.get("data").and_then(|d| d.as_str()) {
                            Some(data) => data.to_owned(),
                            // A local dataset copied to object storage: its
                            // files are at the root, where a new build's
                            // would never replace them.
                            None => {
                                return Err(Error::OutputExists {
                                    path,
                                    why: Some(format!(
                                        "its {} names no `data` folder (a local dataset copied here?): remove it first",
                                        manifest::FILE_NAME
                                    )),
                                });
                            }
                        }
                    }
                    Ok(_) => {
                        return Err(Error::OutputExists {
                            path,
                            why: Some(format!(
                                "its {} was not written by leakless",
                                manifest::FILE_NAME
                            )),
                        });
                    }
                    Err(_) => {
                        return Err(Error::OutputExists {
                            path,
                            why: Some(format!("its {} is not JSON", manifest::FILE_NAME)),
                        });
                    }
                };
                if !overwrite {
                    return Err(Error::OutputExists { path, why: None });
                }
                Some((version, data))
            }
            None => {
                // Without a manifest, only the leftovers of runs killed
                // before their publish may be there.
                let found = block_on(remote.list_below(&remote.key))?;
                let runs = remote.child(RUNS);
                if let Some((other, _)) = found.iter().find(|(k, _)| !k.prefix_matches(&runs)) {
                    return Err(Error::OutputExists {
                        path,
                        why: Some(format!(
                            "it has no {} but holds `{}`",
                            manifest::FILE_NAME,
                            remote.url_of(other)
                        )),
                    });
                }
                None
            }
        };
        Ok(RemoteDestination {
            remote,
            run,
            previous,
        })
    }

    /// A local folder the data is written to before it is uploaded.
    pub fn stage(&self) -> Result<Scratch> {
        Scratch::new(&format!("staging-{}", self.run))
    }

    /// The run's data folder, relative to the dataset.
    pub fn data(&self) -> String {
        format!("{RUNS}/{}", self.run)
    }

    /// Uploads the staged files (all but `skip`, the scratch folders) under
    /// `_runs/RUN/`, then puts the manifest if the dataset is still the one
    /// found, then deletes older runs.
    pub fn publish(&self, staged: &Path, skip: &[&str], manifest_json: &[u8]) -> Result<()> {
        let data = self.remote.child(&self.data());
        let mut files = Vec::new();
        // `.lock`: the local staging's own lock (`Scratch`), not data.
        let skip: Vec<&str> = skip.iter().copied().chain([".lock"]).collect();
        collect_files(staged, staged, &skip, &mut files)?;
        let uploads: Vec<(PathBuf, Key)> = files
            .into_iter()
            .map(|(local, relative)| {
                let key = relative
                    .split('/')
                    .fold(data.clone(), |key, part| key.join(part));
                (local, key)
            })
            .collect();
        let uploaded = block_on(self.remote.upload(uploads));
        if let Err(e) = uploaded {
            block_on(self.remote.delete_below(&data));
            return Err(e);
        }
        super::commit::crash_point("before-publish");
        let manifest_key = self.remote.child(manifest::FILE_NAME);
        let mode = match &self.previous {
            Some((version, _)) => PutMode::Update(version.clone()),
            None => PutMode::Create,
        };
        let put = block_on(self.remote.store.put_opts(
            &manifest_key,
            manifest_json.to_vec().into(),
            PutOptions::from(mode),
        ));
        let ours = match put {
            Ok(put) => put.e_tag,
            // A put retried after a lost reply may have landed: what the
            // store holds decides. This run's data is not deleted after a
            // failed put (its manifest may be the one published, for all
            // this run can tell); the next publish deletes it if it is not.
            Err(e) => match self.published_version_naming_this_run(&manifest_key) {
                Some(e_tag) => e_tag,
                None => {
                    return Err(match e {
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. } => Error::PublishedMeanwhile {
                            path: PathBuf::from(&self.remote.url),
                        },
                        e => self.remote.error("writing", &manifest_key, e),
                    });
                }
            },
        };
        super::commit::crash_point("after-publish");
        self.clean_up(ours);
        Ok(())
    }

    /// The ETag of the manifest the store holds, when it names this run.
    fn published_version_naming_this_run(&self, manifest_key: &Key) -> Option<Option<String>> {
        let (e_tag, bytes) = block_on(async {
            let got = self.remote.store.get(manifest_key).await.ok()?;
            let e_tag = got.meta.e_tag.clone();
            Some((e_tag, got.bytes().await.ok()?))
        })?;
        let manifest = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
        let data = manifest.get("data").and_then(|d| d.as_str())?;
        (data == self.data()).then_some(e_tag)
    }

    /// Deletes the folders of `_runs/` that neither this run's manifest nor
    /// the previous one names and whose newest object is older than the
    /// manifest just put (by the store's clock): those of runs killed before
    /// they published, or of runs that read the manifest before this put
    /// and so were or will be refused. A run that read it after this put
    /// uploads after it and is left alone. Only while this run's manifest
    /// (`ours`, its ETag) is still the published one: once another run has
    /// published, the clean-up is its. Best effort: what is left (an object
    /// in the same second as the put), the next run deletes.
    fn clean_up(&self, ours: Option<String>) {
        let keep: Vec<String> = std::iter::once(self.data())
            .chain(self.previous.as_ref().map(|(_, d)| d.clone()))
            .collect();
        block_on(async {
            let manifest_key = self.remote.child(manifest::FILE_NAME);
            let Ok(published) = self.remote.store.head(&manifest_key).await else {
                return;
            };
            if ours.is_none() || published.e_tag != ours {
                return;
            }
            let runs = self.remote.child(RUNS);
            let Ok(objects) = self.remote.list_meta(&runs).await else {
                return;
            };
            let mut newest: std::collections::BTreeMap<String, _> = Default::default();
            for meta in &objects {
                let Some(below) = meta.location.prefix_match(&runs).and_then(|mut p| p.next())
                else {
                    continue;
                };
                let entry = (newest.entry(format!("{RUNS}/{}", below.as_ref())))
                    .or_insert(meta.last_modified);
                *entry = (*entry).max(meta.last_modified);
            }
            for (folder, newest) in newest {
                if !keep.contains(&folder) && newest < published.last_modified {
                    self.remote.delete_below(&self.remote.child(&folder)).await;
                }
            }
        });
    }
}

/// Every file below `dir` as (local path, path relative to `root` with `/`),
/// leaving out the top-level folders in `skip`.
fn collect_files(
    root: &Path,
    dir: &Path,
    skip: &[&str],
    files: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("listing", dir, e))?.path();
        let relative = path
            .strip_prefix(root)
            .expect("below the root")
            .to_string_lossy()
            .replace('\\', "/");
        if dir == root && skip.contains(&relative.as_str()) {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if path.is_dir() {
            collect_files(root, &path, skip, files)?;
        } else if !name.as_deref().is_some_and(super::is_partial) {
            // A file still being written (a cluster task attempt given up
            // on but still running) is never uploaded.
            files.push((path, relative));
        }
    }
    Ok(())
}
