//! The S3-compatible server the test command starts on loopback (moto), found through
//! `MESHQL_TEST_S3_ENDPOINT`. Tests that need it fail loudly when it is missing.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fixture::{put, s3_store};

pub(crate) struct S3Server {
    pub endpoint: String,
    pub key: String,
    pub secret: String,
}

impl S3Server {
    pub(crate) fn from_env() -> Self {
        let endpoint = std::env::var("MESHQL_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "MESHQL_TEST_S3_ENDPOINT is not set: these tests need an S3-compatible server. \
                 Run the test command from the README (scripts/test.sh), which starts one on loopback."
            )
        });
        S3Server {
            endpoint,
            key: "meshql-test".into(),
            secret: "meshql-test-secret".into(),
        }
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MESHQL_TEST_S3_ENDPOINT".into(), self.endpoint.clone()),
            ("MESHQL_TEST_S3_KEY".into(), self.key.clone()),
            ("MESHQL_TEST_S3_SECRET".into(), self.secret.clone()),
        ]
    }

    /// CreateBucket, as a plain HTTP PUT (the object_store crate does not create buckets).
    pub(crate) async fn create_bucket(&self, bucket: &str) {
        let host = self
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .unwrap_or_else(|e| panic!("S3 server at {} is not reachable: {e}", self.endpoint));
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send CreateBucket");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read CreateBucket");
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "CreateBucket {bucket} failed: {response}"
        );
    }

    /// Upload every file under `dir` to `bucket`, keeping relative paths.
    pub(crate) async fn upload_dir(&self, bucket: &str, dir: &Path) {
        let store = s3_store(self, bucket);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let key = path
                        .strip_prefix(dir)
                        .expect("prefix")
                        .to_string_lossy()
                        .replace('\\', "/");
                    put(store.as_ref(), &key, std::fs::read(&path).expect("read")).await;
                }
            }
        }
    }
}
