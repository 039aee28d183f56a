//! A real PostgreSQL cluster in a temp dir on a free loopback port, owned by the test
//! run (the test command installs the server binaries; nothing else is assumed).
//! PostgreSQL refuses to run as root, so as root the server runs as user `postgres`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The password of the cluster's superuser `meshql` (TCP sign-in uses scram-sha-256).
pub(crate) const PG_PASSWORD: &str = "pg test:pw";

pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// `Some("postgres")` when the tests run as root.
    run_as: Option<String>,
    /// Stops the server if this process exits without dropping the cluster.
    reaper: Option<std::process::Child>,
}

impl PgCluster {
    /// initdb and start. Panics with what to install when the binaries are missing.
    pub(crate) fn start() -> PgCluster {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found (looked for MESHQL_PG_BIN, then \
                 /usr/lib/postgresql/*/bin/initdb): install them with `apt-get install postgresql` \
                 or run the README's test command, which does"
            )
        });
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new()
            .prefix("meshql-pg-")
            .tempdir()
            .expect("temp dir");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD).expect("pwfile");
        if let Some(user) = &run_as {
            chown_recursive(dir.path(), user);
        }
        let data = dir.path().join("data");
        let cluster = PgCluster {
            port: free_port(),
            dir,
            bin,
            run_as,
            reaper: None,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "meshql",
                "-A",
                "scram-sha-256",
                "--pwfile",
                path_str(&pwfile),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
        );
        cluster.start_server();
        let mut cluster = cluster;
        let stop = format!(
            "{} {} -D {} -m immediate stop; rm -rf {}",
            match &cluster.run_as {
                Some(user) => format!("runuser -u {user} --"),
                None => String::new(),
            },
            cluster.bin.join("pg_ctl").display(),
            cluster.data().display(),
            cluster.dir.path().display()
        );
        cluster.reaper = Some(super::reaper::at_exit(&stop));
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)start the server on its port.
    pub(crate) fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off -c log_statement=all",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-o",
                &options,
                "-l",
                path_str(&log),
                "-w",
                "start",
            ],
        );
    }

    /// Stop the server at once (as a crash would), keeping the data.
    pub(crate) fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data()),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Every statement the server has received so far (`log_statement = all`).
    pub(crate) fn statements(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run SQL (psql script syntax, `\copy` included) in `db` as `meshql` over TCP.
    pub(crate) fn psql(&self, db: &str, script: &str) {
        self.psql_with(db, &["-c", script], script);
    }

    /// Run a psql script file (statements and `\copy` lines) in `db`.
    pub(crate) fn psql_file(&self, db: &str, file: &Path) {
        self.psql_with(db, &["-f", path_str(file)], &file.display().to_string());
    }

    fn psql_with(&self, db: &str, input: &[&str], what: &str) {
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "meshql",
            ])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-q"])
            .args(input)
            .env("PGPASSWORD", PG_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", psql.display()));
        assert!(
            out.status.success(),
            "psql failed on {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(match &self.run_as {
            Some(_) => PathBuf::from("runuser"),
            None => self.bin.join("pg_ctl"),
        })
        .args(match &self.run_as {
            Some(user) => vec![
                "-u".to_string(),
                user.clone(),
                "--".to_string(),
                self.bin.join("pg_ctl").display().to_string(),
            ],
            None => vec![],
        })
        .args(["-D", path_str(&self.data()), "-m", "immediate", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
    }
}

fn find_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MESHQL_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_recursive(dir: &Path, user: &str) {
    let status = Command::new("chown")
        .args(["-R", user])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {user} {}", dir.display());
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
