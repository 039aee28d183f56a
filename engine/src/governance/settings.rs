//! Session settings users may change. Everything else (memory, spilling, pushdown,
//! parallelism, catalog defaults) is the operator's: a user must not be able to take
//! the server down or read around a policy with `SET`.

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

/// Larger batches only cost memory.
const MAX_BATCH_SIZE: usize = 65_536;

/// `Err` with the user-facing reason when `plan` changes a setting not on the list.
pub fn check(plan: &LogicalPlan) -> Result<(), String> {
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
    if USER_SETTINGS.contains(&name.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "setting `{variable}` cannot be changed from a session; these can: {}",
            USER_SETTINGS.join(", ")
        ))
    }
}
