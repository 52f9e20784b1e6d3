//! A local S3-compatible server (moto) for the object-storage tests,
//! started on a free 127.0.0.1 port and stopped by its pid, also when the
//! test fails; moto and boto3 (which the tests use to put inputs and read
//! outputs, independently of leakless) are provisioned once into a
//! virtualenv under the target folder, from PyPI. Shared with the cluster
//! crate's tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The virtualenv's Python, with moto's server and boto3.
pub fn python() -> PathBuf {
    super::venv_python(
        "moto-venv",
        "import moto.server, boto3",
        &["moto[server]>=5.1", "boto3"],
    )
}

/// A moto server on 127.0.0.1, stopped by its pid when dropped.
pub struct Server {
    child: Child,
    port: u16,
    python: PathBuf,
}

impl Server {
    pub fn start() -> Server {
        let python = python();
        // A free port, found by binding and letting go, may be taken again
        // before moto binds it: then moto exits and another port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(&python)
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .current_dir(python.parent().unwrap())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut server = Server {
                child,
                port,
                python: python.clone(),
            };
            let started = Instant::now();
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if server.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "moto did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto did not start on any of 5 ports");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto takes an unsigned request).
    pub fn bucket(&self, name: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// The AWS environment that points a client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
        ]
    }

    /// boto3: `put BUCKET KEY FILE`, `get BUCKET KEY FILE`, `list BUCKET
    /// PREFIX` (keys, one per line).
    pub fn boto(&self, args: &[&str]) -> String {
        const SCRIPT: &str = r#"
import sys, boto3
s3 = boto3.client("s3")
op, bucket, key = sys.argv[1:4]
if op == "put":
    s3.upload_file(sys.argv[4], bucket, key)
elif op == "get":
    s3.download_file(bucket, key, sys.argv[4])
elif op == "list":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"])
"#;
        let output = Command::new(&self.python)
            .args(["-c", SCRIPT])
            .args(args)
            .envs(self.env())
            .current_dir(self.python.parent().unwrap())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "boto3 {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    pub fn put(&self, bucket: &str, key: &str, file: &Path) {
        self.boto(&["put", bucket, key, file.to_str().unwrap()]);
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("object");
        self.boto(&["get", bucket, key, file.to_str().unwrap()]);
        std::fs::read(file).unwrap()
    }

    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.boto(&["list", bucket, prefix])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
