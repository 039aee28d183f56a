//! Derived output ports: views over other ports, declared with `sql:`.
//!
//! They are planned after every source port is open, in dependency order, so a view may
//! read another view. A cycle, invalid SQL or a statement that is not a query makes the
//! port unavailable with a problem pointing at its `sql:` key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use super::port::{PortEntry, PortState};
use crate::problem::Problem;
use meshql_config::PortName;

struct Pending {
    entry: Arc<PortEntry>,
    statement: Statement,
    depends_on: Vec<PortName>,
}

/// The session a derived port is planned in: its definer's rights.
pub type Definer<'a> = dyn Fn(&PortEntry) -> Result<SessionState, String> + 'a;

/// Plan every derived port in `ports`: parsed with `state`, planned in the session
/// `definer` gives for it (the owning domain's owner group when the mesh is governed).
pub async fn plan_derived_ports(
    ports: &[Arc<PortEntry>],
    state: &SessionState,
    definer: &Definer<'_>,
) {
    let (default_catalog, default_schema) = {
        let options = state.config().options();
        (
            options.catalog.default_catalog.clone(),
            options.catalog.default_schema.clone(),
        )
    };
    let derived: BTreeSet<PortName> = ports.iter().map(|p| p.info.name.clone()).collect();

    let mut pending: BTreeMap<PortName, Pending> = BTreeMap::new();
    for entry in ports {
        let Some(sql) = entry.info.sql.as_deref() else {
            continue;
        };
        let parsed = state
            .sql_to_statement(sql, &state.config().options().sql_parser.dialect)
            .and_then(|statement| {
                let refs = state.resolve_table_references(&statement)?;
                Ok((statement, refs))
            });
        let (statement, refs) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                fail(
                    entry,
                    format!("invalid SQL: {}", e.strip_backtrace()),
                    "fix the statement in `sql:`",
                );
                continue;
            }
        };
        if !is_query(&statement) {
            fail(
                entry,
                "`sql:` must be a query (SELECT ...)",
                "a derived port is a view over other ports",
            );
            continue;
        }
        let depends_on = refs
            .into_iter()
            .map(|r| r.resolve(&default_catalog, &default_schema))
            .map(|r| PortName {
                domain: r.catalog.to_string(),
                product: r.schema.to_string(),
                port: r.table.to_string(),
            })
            .filter(|name| derived.contains(name))
            .collect();
        pending.insert(
            entry.info.name.clone(),
            Pending {
                entry: Arc::clone(entry),
                statement,
                depends_on,
            },
        );
    }

    for name in plan_order(&mut pending) {
        let Some(p) = pending.remove(&name) else {
            continue;
        };
        let definer_state = match definer(&p.entry) {
            Ok(state) => state,
            Err(reason) => {
                fail(
                    &p.entry,
                    reason,
                    "set the domain's `owner` to the group that defines it",
                );
                continue;
            }
        };
        match definer_state.statement_to_plan(p.statement).await {
            Ok(plan) => {
                let view = ViewTable::new(plan, p.entry.info.sql.clone());
                p.entry.set_state(PortState::Ready(Arc::new(view)));
            }
            Err(e) => {
                let unavailable =
                    matches!(crate::Error::find(&e), Some(crate::Error::Unavailable(_)));
                let message = crate::Error::from(e).to_string();
                if unavailable {
                    // The SQL is fine; a port it reads is not.
                    fail(
                        &p.entry,
                        format!("reads an unavailable port: {message}"),
                        "fix that port; derived ports are planned when the mesh loads",
                    )
                } else {
                    fail(
                        &p.entry,
                        format!("invalid SQL: {message}"),
                        "fix the statement in `sql:`",
                    )
                }
            }
        }
    }
}

fn is_query(statement: &Statement) -> bool {
    matches!(statement, Statement::Statement(s) if matches!(**s, SqlStatement::Query(_)))
}

/// Dependencies first. Ports on a cycle are failed and left out.
fn plan_order(pending: &mut BTreeMap<PortName, Pending>) -> Vec<PortName> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &PortName,
        pending: &BTreeMap<PortName, Pending>,
        marks: &mut BTreeMap<PortName, Mark>,
        stack: &mut Vec<PortName>,
        order: &mut Vec<PortName>,
        cycles: &mut Vec<Vec<PortName>>,
    ) {
        match marks.get(name) {
            Some(Mark::Done) => return,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.clone());
                cycles.push(cycle);
                return;
            }
            None => {}
        }
        let Some(p) = pending.get(name) else { return };
        marks.insert(name.clone(), Mark::Visiting);
        stack.push(name.clone());
        for dep in &p.depends_on {
            visit(dep, pending, marks, stack, order, cycles);
        }
        stack.pop();
        marks.insert(name.clone(), Mark::Done);
        order.push(name.clone());
    }

    let mut marks = BTreeMap::new();
    let mut order = Vec::new();
    let mut cycles = Vec::new();
    let names: Vec<PortName> = pending.keys().cloned().collect();
    for name in &names {
        visit(
            name,
            pending,
            &mut marks,
            &mut Vec::new(),
            &mut order,
            &mut cycles,
        );
    }
    for cycle in cycles {
        let path = cycle
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" -> ");
        for name in &cycle {
            if let Some(p) = pending.remove(name) {
                fail(
                    &p.entry,
                    format!("derived ports form a cycle: {path}"),
                    "a derived port cannot read itself, directly or through other derived ports",
                );
            }
        }
    }
    order
}

fn fail(entry: &PortEntry, message: impl Into<String>, help: &str) {
    let problem: Problem = entry
        .info
        .origin
        .problem_at(&["sql".to_string()], message)
        .with_subject(format!("output port `{}`", entry.info.name))
        .with_help(help);
    entry.set_state(PortState::broken(problem));
}
