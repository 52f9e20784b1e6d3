//! What the cluster tests share.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// SHA-256 of every data file of a dataset, by path relative to it (the
/// manifest left out: see [`manifest_data`]).
pub fn dataset_files(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if relative == "_manifest.json" {
                continue;
            }
            let digest = Sha256::digest(std::fs::read(&path).unwrap());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            found.insert(relative, hex);
        }
    }
    found
}

/// A dataset's manifest without what names its place (settings, data).
pub fn manifest_data(dir: &Path) -> serde_json::Value {
    let text = std::fs::read(dir.join("_manifest.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let object = m.as_object_mut().unwrap();
    object.remove("settings");
    object.remove("data");
    m
}
