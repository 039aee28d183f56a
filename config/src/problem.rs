//! A problem found in a mesh: where it is (file, line, column), what it concerns (a
//! port, a source), what is wrong and how to fix it. `meshql check` prints these.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::spans::Position;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub position: Position,
    /// What the problem concerns, e.g. "output port `sales.orders.lineitem`".
    pub subject: Option<String>,
    pub message: String,
    /// How to fix it, when we can tell.
    pub help: Option<String>,
}

impl Problem {
    pub fn new(file: &Path, position: Position, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            position,
            subject: None,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The message without the location, for errors raised at query time.
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(subject) => format!("{subject}: {}", self.describe_without_subject()),
            None => self.describe_without_subject(),
        }
    }

    /// The message and help only.
    pub fn describe_without_subject(&self) -> String {
        let mut s = self.message.clone();
        if let Some(help) = &self.help {
            s.push_str(" (help: ");
            s.push_str(help);
            s.push(')');
        }
        s
    }
}

impl fmt::Display for Problem {
    /// `FILE:LINE:COL: subject: message (help: ...)`, the format editors jump to, always
    /// on one line (so tools can read one problem per line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.position.line,
            self.position.column,
            self.describe().replace('\n', " ")
        )
    }
}

/// Problems joined one per line.
pub fn display_all(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
