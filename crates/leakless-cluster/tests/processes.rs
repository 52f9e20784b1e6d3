//! `leakless-cluster scheduler` and two `executor` processes on 127.0.0.1:
//! a build through them equals the embedded build, also when one executor
//! is killed (SIGKILL) in the middle of its task.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dataset_files, examples, manifest_data};

const BIN: &str = env!("CARGO_BIN_EXE_leakless-cluster");

/// A child process, killed by its pid when dropped (also when the test
/// fails).
struct Child {
    child: std::process::Child,
    name: String,
    log: PathBuf,
}

impl Child {
    fn start(name: &str, args: &[String], logs: &Path) -> Child {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Child {
            child,
            name: name.to_owned(),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) of a child we started and have not reaped.
        unsafe {
            libc::kill(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.name, self.log());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
fn wait_for(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.child.try_wait() {
            panic!("{} exited with {status}:\n{}", child.name, child.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} never listened on {port}",
            child.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scheduler and two executors (one task at a time each).
struct LocalCluster {
    scheduler: u16,
    executors: Vec<Child>,
    _scheduler: Child,
}

impl LocalCluster {
    fn start(dir: &Path) -> LocalCluster {
        let port = free_port();
        let mut scheduler = Child::start(
            "scheduler",
            &[
                "scheduler".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
                "--executor-timeout".into(),
                "3".into(),
            ],
            dir,
        );
        wait_for(port, &mut scheduler);
        let executors = (0..2)
            .map(|i| {
                let (flight, grpc) = (free_port(), free_port());
                let work = dir.join(format!("work-{i}"));
                let mut executor = Child::start(
                    &format!("executor-{i}"),
                    &[
                        "executor".into(),
                        "--scheduler".into(),
                        format!("127.0.0.1:{port}"),
                        "--bind".into(),
                        format!("127.0.0.1:{flight}"),
                        "--grpc-port".into(),
                        grpc.to_string(),
                        "--work-dir".into(),
                        work.display().to_string(),
                        "--concurrent-tasks".into(),
                        "1".into(),
                        "--heartbeat".into(),
                        "1".into(),
                    ],
                    dir,
                );
                // Executors pull their tasks: only the Flight port listens.
                wait_for(flight, &mut executor);
                executor
            })
            .collect();
        LocalCluster {
            scheduler: port,
            executors,
            _scheduler: scheduler,
        }
    }

    fn build(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args([
                "build",
                "--scheduler",
                &format!("127.0.0.1:{}", self.scheduler),
            ])
            .args(["--remote-shuffle-reads", "--quiet"])
            .args(args);
        command
    }
}

fn embedded(build: leakless::Build) {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(build.execute())
        .unwrap();
}

#[test]
fn a_build_survives_an_executor_killed_mid_task() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path());
    let mut cluster = cluster;

    // The rich example through the processes equals the embedded build.
    let spec = examples().join("rich/leakless.toml");
    let expected_dir = dir.path().join("rich-embedded");
    embedded(leakless::Build::from_spec_file(&spec, &expected_dir).unwrap());
    let out = dir.path().join("rich");
    let spec_arg = spec.display().to_string();
    let out_arg = out.display().to_string();
    let done = cluster
        .build(&["--spec", &spec_arg, "--out", &out_arg, "--partitions", "4"])
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(dataset_files(&out), dataset_files(&expected_dir));
    assert_eq!(manifest_data(&out), manifest_data(&expected_dir));

    // A marketplace big enough for tasks to take a while; the spine spills
    // at once, so a task's first spill file (named by its process) shows
    // that the victim is mid-task.
    let data = dir.path().join("market");
    let params = leakless::synth::Params::new(200_000);
    leakless::synth::generate(&params, &data).unwrap();
    let inputs = ["impressions.csv", "clicks.csv", "listings.csv"].map(|f| data.join(f));
    let expected_dir = dir.path().join("market-embedded");
    embedded(leakless::Build::new(
        &inputs[0],
        &inputs[1],
        &inputs[2],
        &expected_dir,
    ));
    let [impressions, clicks, listings] = inputs.map(|p| p.display().to_string());
    let shorthand = [
        "--impressions",
        &impressions,
        "--clicks",
        &clicks,
        "--listings",
        &listings,
    ];
    // By output bucket, the victim's running tasks run again elsewhere.
    kill_mid_build(
        &mut cluster,
        dir.path(),
        "market-out",
        &shorthand,
        &["--by-output-bucket"],
    );
    same_dataset(&dir.path().join("market-out"), &expected_dir);

    // Split by key, the victim dies holding shuffle files a later stage
    // needs (its writer's spill shows it is in the last stage): the job
    // fails and the client runs it again, on a fresh pair of executors.
    drop(cluster);
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let mut cluster = LocalCluster::start(&second);
    kill_mid_build(&mut cluster, dir.path(), "market-split", &shorthand, &[]);
    same_dataset(&dir.path().join("market-split"), &expected_dir);
}

/// The two datasets hold the same files and manifest data.
fn same_dataset(out: &Path, expected: &Path) {
    assert_eq!(dataset_files(out), dataset_files(expected));
    assert_eq!(manifest_data(out), manifest_data(expected));
}

/// Builds dataset `name` under `parent` through `cluster` (`args`, then
/// `extra`), kills the second executor once it spills (mid-task), and
/// waits for the build, which must succeed.
fn kill_mid_build(
    cluster: &mut LocalCluster,
    parent: &Path,
    name: &str,
    args: &[&str],
    extra: &[&str],
) {
    let out = parent.join(name);
    let out_arg = out.display().to_string();
    let mut build = cluster
        .build(args)
        .args(extra)
        .args([
            "--out",
            &out_arg,
            "--partitions",
            "8",
            "--spill-bytes",
            "100000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let victim = cluster.executors[1].pid();
    let mark = format!("spine-{victim}-");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if spill_of(parent, name, &mark) {
            break;
        }
        if let Ok(Some(status)) = build.try_wait() {
            panic!("the build ended ({status}) before the victim ran a task");
        }
        assert!(Instant::now() < deadline, "the victim never ran a task");
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.executors[1].kill();
    // The build must end, one way or the other, in a few minutes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while build.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            build.kill().unwrap();
            // The processes' logs follow (each child's drop prints it).
            panic!("the build did not end after the victim died");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = build.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// Whether a spill file whose name starts with `mark` is in the staging
/// folder of dataset `name` under `parent`.
fn spill_of(parent: &Path, name: &str, mark: &str) -> bool {
    let prefix = format!(".{name}.leakless-staging-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return false;
    };
    entries.flatten().any(|staging| {
        staging.file_name().to_string_lossy().starts_with(&prefix)
            && std::fs::read_dir(staging.path().join("_spill")).is_ok_and(|spills| {
                spills
                    .flatten()
                    .any(|f| f.file_name().to_string_lossy().starts_with(mark))
            })
    })
}
