//! Cleanup that runs when the test process exits, however it exits. Shared fixtures
//! live in statics that are never dropped; a server left running would also hold the
//! test command's output pipe open and hang it.

use std::process::{Child, Command, Stdio};

/// Run `shell` once this process is gone: a shell blocks reading a pipe whose only
/// writer is this process, so the read returns at exit.
pub(crate) fn at_exit(shell: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read _ignored; {shell}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cleanup watcher")
}
