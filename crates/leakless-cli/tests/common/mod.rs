//! What the CLI's test files share.

pub mod moto;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The Python of a virtualenv `name` under the target folder in which
/// `import` runs, provisioned from PyPI with `packages` the first time (so
/// that `cargo test` needs only Python 3). One test at a time provisions.
pub fn venv_python(name: &str, import: &str, packages: &[&str]) -> PathBuf {
    static PROVISION: Mutex<()> = Mutex::new(());
    let _one_at_a_time = PROVISION.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = venv.join("bin").join("python");
    // Run from the venv, so that no file of the test's folder shadows a
    // module.
    let ready = |python: &Path| {
        python.exists()
            && Command::new(python)
                .args(["-c", import])
                .current_dir(&venv)
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return python;
    }
    let run = |command: &mut Command| {
        let output = command.output().expect("python3 runs");
        assert!(
            output.status.success(),
            "provisioning {packages:?} into `{}` failed: {}",
            venv.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages));
    python
}
