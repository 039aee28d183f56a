//! Admission: how many statements run at once, per user and in all, and how long one
//! may take.
//!
//! A statement that scans anything (ports, `mesh.meta`, table functions) takes a slot of
//! its user (at most `max_per_user` at once) and then one of the server's (at most
//! `max_running`); both queue in arrival order (tokio's semaphores are fair). Statements
//! that scan nothing (`SELECT 1`, settings) take only their user's slot, so they are
//! never queued behind other users' heavy statements. Every wait counts against the
//! statement timeout, which ends a statement (planning, queueing or streaming) with a
//! clear error and an audit record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Process-wide bounds on running statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// Longest a statement may take from planning to its last row (None: unbounded).
    pub statement_timeout: Option<Duration>,
    /// Statements that scan anything, running at once; more wait in line.
    pub max_running: usize,
    /// Statements one user runs at once; more of theirs wait in line.
    pub max_per_user: usize,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        AdmissionOptions {
            statement_timeout: Some(Duration::from_secs(15 * 60)),
            max_running: (2 * cores).max(8),
            max_per_user: 4,
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    options: AdmissionOptions,
    running: Arc<Semaphore>,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Statements admitted and not yet ended.
    admitted: Arc<AtomicUsize>,
    shutting_down: AtomicBool,
}

/// Held while a statement runs; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admitted {
    _user: OwnedSemaphorePermit,
    _running: Option<OwnedSemaphorePermit>,
    count: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(options: AdmissionOptions) -> Self {
        Admission {
            running: Arc::new(Semaphore::new(options.max_running.max(1))),
            users: Mutex::new(HashMap::new()),
            admitted: Arc::new(AtomicUsize::new(0)),
            shutting_down: AtomicBool::new(false),
            options,
        }
    }

    /// Statements running now (admitted, not yet ended).
    pub fn running(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// From now on statements that end unfinished are recorded as cut by the shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn options(&self) -> &AdmissionOptions {
        &self.options
    }

    /// When a statement that starts now must end: after the server's timeout, or the
    /// session's (`meshql.statement_timeout_s`) where that is shorter.
    pub fn deadline(&self, session: Option<Duration>) -> Option<Deadline> {
        let limit = match (self.options.statement_timeout, session) {
            (Some(server), Some(session)) => Some(server.min(session)),
            (server, session) => server.or(session),
        };
        limit.map(|limit| Deadline {
            at: Instant::now() + limit,
            limit,
            by_session: session.is_some_and(|s| Some(s) == Some(limit)),
        })
    }

    /// Wait for `user`'s slot and, if the statement reads ports, a server slot; fail at
    /// `deadline`.
    pub async fn admit(
        &self,
        user: &str,
        reads_ports: bool,
        deadline: Option<Deadline>,
    ) -> Result<Admitted> {
        let user_slots = {
            let mut users = self
                .users
                .lock()
                .map_err(|_| Error::Internal("admission state poisoned".into()))?;
            // Users with nothing running or waiting are forgotten, so the map stays small
            // (an entry someone is about to acquire from is held by them too).
            let max = self.options.max_per_user.max(1);
            users.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
            Arc::clone(
                users
                    .entry(user.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.options.max_per_user.max(1)))),
            )
        };
        let wait = async {
            let user_permit = user_slots
                .acquire_owned()
                .await
                .map_err(|_| Error::Internal("admission closed".into()))?;
            let running = if reads_ports {
                Some(
                    Arc::clone(&self.running)
                        .acquire_owned()
                        .await
                        .map_err(|_| Error::Internal("admission closed".into()))?,
                )
            } else {
                None
            };
            self.admitted.fetch_add(1, Ordering::SeqCst);
            Ok(Admitted {
                _user: user_permit,
                _running: running,
                count: Arc::clone(&self.admitted),
            })
        };
        match deadline {
            None => wait.await,
            Some(deadline) => tokio::time::timeout_at(deadline.at, wait)
                .await
                .map_err(|_| deadline.timed_out("waiting for its turn"))?,
        }
    }
}

/// When a statement must end, and which timeout says so.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    limit: Duration,
    by_session: bool,
}

impl Deadline {
    /// The error of a statement past its deadline.
    pub fn timed_out(&self, while_doing: &str) -> Error {
        let setting = if self.by_session {
            "SET meshql.statement_timeout_s"
        } else {
            "--statement-timeout-s"
        };
        Error::Timeout(format!(
            "statement timeout: the statement ran longer than {} s ({setting}) and was ended \
             while {while_doing}",
            self.limit.as_secs_f64().ceil() as u64
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn users_queue_for_their_own_slots_and_light_statements_skip_the_line() {
        let admission = Admission::new(AdmissionOptions {
            statement_timeout: Some(Duration::from_millis(200)),
            max_running: 1,
            max_per_user: 1,
        });
        let heavy = admission.admit("a", true, None).await.unwrap();
        // a's second statement waits for a's first, and times out.
        let deadline = admission.deadline(None);
        let again = admission.admit("a", false, deadline).await.unwrap_err();
        assert!(again.to_string().contains("statement timeout"), "{again}");
        // b's light statement does not wait for the server slot a holds...
        let light = admission.admit("b", false, None).await.unwrap();
        drop(light);
        // ...but b's heavy one does.
        let deadline = admission.deadline(None);
        assert!(admission.admit("b", true, deadline).await.is_err());
        drop(heavy);
        assert!(
            admission
                .admit("b", true, admission.deadline(None))
                .await
                .is_ok()
        );
    }
}
