//! The REPL's line editor helper: tab completion of SQL keywords and of the mesh's
//! names (domains, products, ports, `domain.product.port`, columns), and statements that
//! continue over lines until `;`.

use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Highlighter, Hinter};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "INNER JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS NULL",
    "IS NOT NULL",
    "LIKE",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "WITH",
    "UNION ALL",
    "EXPLAIN",
    "EXPLAIN ANALYZE",
    "SHOW TABLES",
    "DESC",
    "ASC",
    "BETWEEN",
    "DATE",
    "CAST",
];

#[derive(Helper, Highlighter, Hinter)]
pub(super) struct ReplHelper {
    /// Names from the mesh, refreshed at start (shared with the REPL loop).
    pub names: Arc<RwLock<Vec<String>>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map(|i| i + 1)
            .unwrap_or(0);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, Vec::new()));
        }
        let lower = word.to_lowercase();
        let names = self.names.read().map(|n| n.clone()).unwrap_or_default();
        let mut out: Vec<Pair> = names
            .iter()
            .filter(|n| n.starts_with(&lower))
            .map(|n| Pair {
                display: n.clone(),
                replacement: n.clone(),
            })
            .collect();
        // Keywords keep the case the user typed.
        let upper = word.to_uppercase();
        let keep_lower = word.chars().next().is_some_and(char::is_lowercase);
        out.extend(KEYWORDS.iter().filter(|k| k.starts_with(&upper)).map(|k| {
            let k = if keep_lower {
                k.to_lowercase()
            } else {
                k.to_string()
            };
            Pair {
                display: k.clone(),
                replacement: k,
            }
        }));
        out.sort_by(|a, b| a.display.cmp(&b.display));
        out.dedup_by(|a, b| a.display == b.display);
        Ok((start, out))
    }
}

impl Validator for ReplHelper {
    /// A statement goes on until `;`; backslash commands and empty lines end at once.
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim();
        let ends = input.is_empty() || input.starts_with('\\') || input.ends_with(';');
        if ends || matches!(input, "exit" | "quit") {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}
