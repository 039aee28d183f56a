//! Session settings users may change. Everything else (memory, spilling, pushdown,
//! parallelism, catalog defaults) is the operator's: a user must not be able to take
//! the server down or read around a policy with `SET`. meshql's rules may be switched
//! off (a statement gets slower, never different: no rule decides access), and the
//! statement timeout lowered.

use std::time::Duration;

use datafusion::logical_expr::{LogicalPlan, Statement};

pub const USER_SETTINGS: &[&str] = &[
    "datafusion.execution.time_zone",
    "datafusion.execution.batch_size",
    "datafusion.explain.format",
    "datafusion.explain.show_schema",
    "datafusion.explain.show_sizes",
    "datafusion.explain.logical_plan_only",
    "datafusion.explain.physical_plan_only",
];

/// Lowers the server's statement timeout for the session.
const TIMEOUT: &str = "meshql.statement_timeout_s";

/// Larger batches only cost memory.
const MAX_BATCH_SIZE: usize = 65_536;

/// `Err` with the user-facing reason when `plan` changes a setting not on the list, or
/// raises the statement timeout past the server's (`server_timeout`).
pub fn check(plan: &LogicalPlan, server_timeout: Option<Duration>) -> Result<(), String> {
    let (variable, value) = match plan {
        LogicalPlan::Statement(Statement::SetVariable(s)) => (&s.variable, Some(&s.value)),
        LogicalPlan::Statement(Statement::ResetVariable(r)) => (&r.variable, None),
        _ => return Ok(()),
    };
    let name = variable.to_ascii_lowercase();
    if name == "datafusion.execution.batch_size"
        && let Some(v) = value
        && v.trim().parse::<usize>().is_ok_and(|n| n > MAX_BATCH_SIZE)
    {
        return Err(format!("batch_size can be at most {MAX_BATCH_SIZE}"));
    }
    if name == TIMEOUT
        && let Some(v) = value
    {
        let v = v.trim().trim_matches('\'');
        let seconds = v
            .parse::<u64>()
            .map_err(|_| format!("{TIMEOUT} takes whole seconds, not `{v}`"))?;
        let server = server_timeout.map(|t| t.as_secs_f64().ceil() as u64);
        return match server {
            _ if seconds == 0 && server.is_some() => Err(format!(
                "{TIMEOUT} can only lower the server's timeout ({} s); 0 would lift it",
                server.unwrap_or_default()
            )),
            Some(max) if seconds > max => Err(format!(
                "{TIMEOUT} can only lower the server's timeout ({max} s), not raise it to {seconds} s"
            )),
            _ => Ok(()),
        };
    }
    let rule = name
        .strip_prefix("meshql.")
        .is_some_and(|r| crate::optimizer::rule_settings().contains(&r));
    if USER_SETTINGS.contains(&name.as_str()) || rule || name == TIMEOUT {
        Ok(())
    } else {
        Err(format!(
            "setting `{variable}` cannot be changed from a session; these can: {}, {TIMEOUT}, \
             and meshql's rules: {}",
            USER_SETTINGS.join(", "),
            crate::optimizer::rule_settings()
                .iter()
                .map(|r| format!("meshql.{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}
