//! `meshql check` for the access rules: what can only be known with the ports open.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;

use super::Governance;
use super::expr::PolicyExpr;
use super::identity::{Identity, Principal};
use super::table::{policy_plan, quote, quoted_port};
use crate::problem::Problem;
use meshql_config::PortName;
use meshql_config::decode::closest;

pub(super) async fn validate(governance: &Governance) -> Vec<Problem> {
    let Some(policies) = governance.policies() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if let Some(reason) = governance.audit().problem() {
        let mut at = policies.origin.clone();
        at.path.push("audit_log".into());
        problems.push(
            at.problem(reason.to_string())
                .with_subject("access")
                .with_help("statements fail until the audit log can be written"),
        );
    }
    let registry = governance.registry();
    let names: Vec<String> = registry
        .ports()
        .map(|(_, p)| p.info.name.to_string())
        .collect();
    let users: Vec<String> = policies.users.keys().cloned().collect();
    let check_user = |p: &Principal, at: &meshql_config::Origin, problems: &mut Vec<Problem>| {
        if let Principal::User(name) = p
            && !policies.users.contains_key(name)
        {
            let mut problem = at.problem(format!("no user `{name}` is declared under `users`"));
            if let Some(best) = closest(name, &users) {
                problem = problem.with_help(format!("did you mean `user:{best}`?"));
            }
            problems.push(problem);
        }
    };
    for (i, p) in policies.admins.iter().enumerate() {
        let mut at = policies.origin.clone();
        at.path.extend(["admins".to_string(), i.to_string()]);
        check_user(p, &at, &mut problems);
    }

    for rule in &policies.rules {
        for (i, p) in rule.principals.iter().enumerate() {
            let mut at = rule.origin.clone();
            at.path.extend(["principals".to_string(), i.to_string()]);
            check_user(p, &at, &mut problems);
        }
        for (pattern, at) in rule.allow.iter().chain(&rule.deny) {
            if !registry.ports().any(|(_, p)| pattern.matches(&p.info.name)) {
                let mut problem = at
                    .problem(format!("`{pattern}` matches no output port"))
                    .with_subject(format!("rule {}", rule.number));
                if let Some(best) = closest(&pattern.to_string(), &names) {
                    problem = problem.with_help(format!("did you mean `{best}`?"));
                }
                problems.push(problem);
            }
        }
        for (port, filter) in &rule.row_filters {
            let subject = format!("row filter on `{port}` (rule {})", rule.number);
            if let Some(raw) = port_table(governance, port, filter, &subject, &names, &mut problems)
            {
                check_refs(filter, port, &subject, &mut problems);
                if let Err(m) = filter_type(governance, port, filter).await {
                    problems.push(filter.origin.problem(m).with_subject(subject.clone()));
                } else if let Err(m) =
                    policy_plan(governance, port, &raw, &[sql(filter)], &[]).await
                {
                    problems.push(filter.origin.problem(m).with_subject(subject));
                }
            }
        }
        for (port, column, mask) in &rule.column_masks {
            let subject = format!("column mask on `{port}.{column}` (rule {})", rule.number);
            if let Some(raw) = port_table(governance, port, mask, &subject, &names, &mut problems) {
                check_refs(mask, port, &subject, &mut problems);
                check_mask(
                    governance,
                    port,
                    &raw,
                    column,
                    mask,
                    &subject,
                    &mut problems,
                )
                .await;
            }
        }
    }

    for policy in &policies.tag_policies {
        let subject = format!("tag policy `{}`", policy.tag);
        let mut tagged = 0;
        for (_, entry) in registry.ports() {
            let Some(raw) = entry.table() else { continue };
            for (column, doc) in &entry.info.columns {
                if !doc.tags.contains(&policy.tag) || raw.schema().field_with_name(column).is_err()
                {
                    continue;
                }
                tagged += 1;
                let port = &entry.info.name;
                check_refs(&policy.mask, port, &subject, &mut problems);
                let subject = format!("{subject} on `{port}.{column}`");
                check_mask(
                    governance,
                    port,
                    &raw,
                    column,
                    &policy.mask,
                    &subject,
                    &mut problems,
                )
                .await;
            }
        }
        if tagged == 0 {
            problems.push(
                policy
                    .mask
                    .origin
                    .problem(format!("no column of any port is tagged `{}`", policy.tag))
                    .with_subject(subject)
                    .with_help("tag columns under a port's `columns:` (e.g. `tags: [pii]`)"),
            );
        }
    }
    problems
}

/// Expressions are checked as one user who is in no group.
fn sql(e: &PolicyExpr) -> String {
    e.sql_for(&Identity::new("meshql-check", Vec::new()))
}

/// The port an expression is about, if it exists and is open (a broken port has its
/// own problem already).
fn port_table(
    governance: &Governance,
    port: &PortName,
    e: &PolicyExpr,
    subject: &str,
    names: &[String],
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn TableProvider>> {
    let entry = governance
        .registry()
        .ports()
        .find(|(_, p)| p.info.name == *port)
        .map(|(_, p)| Arc::clone(p));
    match entry {
        None => {
            let mut problem = e
                .origin
                .problem(format!("there is no output port `{port}`"))
                .with_subject(subject.to_string());
            if let Some(best) = closest(&port.to_string(), names) {
                problem = problem.with_help(format!("did you mean `{best}`?"));
            }
            problems.push(problem);
            None
        }
        Some(entry) => entry.table(),
    }
}

/// Subqueries must name ports in full, and not the port the policy protects.
fn check_refs(e: &PolicyExpr, port: &PortName, subject: &str, problems: &mut Vec<Problem>) {
    for name in e.table_refs() {
        let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
        let unquote = |s: &String| s.trim_matches('"').to_string();
        if parts.len() != 3 {
            problems.push(
                e.origin
                    .problem(format!("`{name}` is not a full port name"))
                    .with_subject(subject.to_string())
                    .with_help("name ports in policies as `domain.product.port`"),
            );
        } else if parts.iter().map(unquote).collect::<Vec<_>>()
            == [port.domain.clone(), port.product.clone(), port.port.clone()]
        {
            problems.push(
                e.origin
                    .problem(format!(
                        "the policy of `{port}` reads `{port}` itself (recursive)"
                    ))
                    .with_subject(subject.to_string())
                    .with_help("a policy may read other ports, never the port it protects"),
            );
        }
    }
}

async fn filter_type(
    governance: &Governance,
    port: &PortName,
    filter: &PolicyExpr,
) -> Result<(), String> {
    let statement = format!(
        "SELECT ({}) AS {} FROM {}",
        sql(filter),
        quote("filter"),
        quoted_port(port)
    );
    let plan = governance
        .planner()
        .create_logical_plan(&statement)
        .await
        .map_err(|e| e.strip_backtrace())?;
    match plan.schema().field(0).data_type() {
        DataType::Boolean | DataType::Null => Ok(()),
        other => Err(format!(
            "a row filter must be a condition (boolean), this one is {other}"
        )),
    }
}

async fn check_mask(
    governance: &Governance,
    port: &PortName,
    raw: &Arc<dyn TableProvider>,
    column: &str,
    mask: &PolicyExpr,
    subject: &str,
    problems: &mut Vec<Problem>,
) {
    if let Err(m) = policy_plan(
        governance,
        port,
        raw,
        &[],
        &[(column.to_string(), sql(mask))],
    )
    .await
    {
        problems.push(mask.origin.problem(m).with_subject(subject.to_string()));
    }
}
