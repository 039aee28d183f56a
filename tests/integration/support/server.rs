//! A real `meshql serve` process on a port the OS picks, and Flight SQL clients for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::Channel;

/// A running server, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub url: String,
    /// Kills the server if this process exits without dropping it.
    reaper: Child,
}

impl Server {
    /// `meshql serve --config MESH --bind 127.0.0.1:0 EXTRA...` with `env`; waits for the
    /// `listening on` line (no sleeps).
    pub(crate) fn start(mesh: &Path, env: &[(String, String)], extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshql"));
        cmd.args(["serve", "--config"])
            .arg(mesh)
            .args(["--bind", "127.0.0.1:0"])
            .args(extra)
            .env("MESHQL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start meshql serve");
        let reaper = super::reaper::at_exit(&format!("kill -9 {} 2>/dev/null", child.id()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.to_string();
                    }
                }
                _ => {
                    let status = child.wait().expect("wait");
                    panic!("meshql serve exited before listening: {status}");
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, reaper }
    }

    pub(crate) fn endpoint(&self) -> String {
        self.url.replace("grpc://", "http://")
    }

    pub(crate) async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(self.endpoint())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        FlightSqlServiceClient::new(channel)
    }

    /// The exit status if the process has ended (crashed or aborted).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Send SIGTERM and wait for the process.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reaper.kill();
        let _ = self.reaper.wait();
    }
}
