//! Running the real `meshql` binary.

use std::path::Path;
use std::process::{Command, Output};

use super::fixture::fixture;

/// `meshql ARGS...` with the test mesh's environment; returns the finished process.
pub(crate) fn meshql(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshql"));
    cmd.args(args).env("MESHQL_LOG", "error");
    for (k, v) in fixture().env() {
        cmd.env(k, v);
    }
    cmd.output().expect("run meshql")
}

/// `meshql ARGS...` without the fixture (for meshes that need no S3).
pub(crate) fn meshql_plain(args: &[&str], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshql"));
    cmd.args(args).env("MESHQL_LOG", "error");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.output().expect("run meshql")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
