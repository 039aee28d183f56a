//! Bounds on what one statement may ask of the server, checked before it is planned.
//!
//! Planners and optimizers recurse over expression trees: a statement of 100,000 `+`
//! terms fits in 1 MB of text and would need a stack far deeper than any thread has, and
//! a stack overflow aborts the process (every user's session with it, and the audit
//! records of statements still streaming). The server runs statements on threads with
//! [`STACK_BYTES`] of stack, and refuses statements deeper than the bounds here with a
//! clear error, so that deep but legal statements succeed and nothing aborts. The bounds
//! were chosen with a margin below what that stack measurably survives in a debug build
//! (docs: docs/guide/governance.md#limits).

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, Select, SetExpr, TableFactor, Visit, Visitor};

use crate::error::{Error, Result};

/// The stack of every thread that plans or runs statements (the `meshql` binary's
/// runtime). Only touched pages take memory.
pub const STACK_BYTES: usize = 256 << 20;

/// Bounds on one statement. The defaults hold on threads of [`STACK_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Bytes of SQL text.
    pub max_bytes: usize,
    /// Nesting of expressions: `1+1+1` is 3 deep, and so is `f(g(h(x)))`.
    pub max_expression_depth: usize,
    /// Nesting of queries (subqueries, derived tables, CTE bodies) plus the number of
    /// CTEs of each WITH (a CTE reading the one before it nests its plan one deeper).
    pub max_query_depth: usize,
    /// SELECT blocks in all (UNION branches, subqueries, CTEs): planning a UNION grows
    /// faster than its branches (8,000 took minutes).
    pub max_selects: usize,
    /// Tables, table functions and derived tables named in FROM clauses, in all: each
    /// join's schema holds every column so far, so a FROM list of 80,000 relations
    /// plans in quadratic memory.
    pub max_relations: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        StatementLimits {
            max_bytes: 1 << 20,
            max_expression_depth: 4096,
            max_query_depth: 512,
            max_selects: 1000,
            max_relations: 1000,
        }
    }
}

impl StatementLimits {
    /// Refuse `sql` if it is longer than the bound (before anything parses it).
    pub fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.max_bytes {
            return Err(Error::TooComplex(format!(
                "the statement is {} bytes; the limit is {} bytes (--max-statement-bytes)",
                sql.len(),
                self.max_bytes
            )));
        }
        Ok(())
    }

    /// Refuse a parsed statement that nests deeper than the bounds.
    pub fn check_depth(&self, statement: &DFStatement) -> Result<()> {
        let mut depth = Depth {
            limits: *self,
            expressions: 0,
            queries: 0,
            selects: 0,
            relations: 0,
        };
        match depth.statement(statement) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(message) => Err(Error::TooComplex(message)),
        }
    }
}

impl Depth {
    fn count_select(&mut self) -> ControlFlow<String> {
        self.selects += 1;
        if self.selects > self.limits.max_selects {
            return ControlFlow::Break(format!(
                "the statement has more than {} SELECTs (UNION branches, subqueries, CTEs)",
                self.limits.max_selects
            ));
        }
        ControlFlow::Continue(())
    }

    /// DataFusion's statement wraps sqlparser's (EXPLAIN, COPY) and is not visitable.
    fn statement(&mut self, statement: &DFStatement) -> ControlFlow<String> {
        match statement {
            DFStatement::Statement(s) => s.visit(self),
            DFStatement::Explain(e) => self.statement(&e.statement),
            DFStatement::CopyTo(copy) => match &copy.source {
                CopyToSource::Query(q) => q.visit(self),
                CopyToSource::Relation(_) => ControlFlow::Continue(()),
            },
            DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {
                ControlFlow::Continue(())
            }
        }
    }
}

struct Depth {
    limits: StatementLimits,
    expressions: usize,
    queries: usize,
    selects: usize,
    relations: usize,
}

impl Visitor for Depth {
    type Break = String;

    fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.expressions += 1;
        if self.expressions > self.limits.max_expression_depth {
            return ControlFlow::Break(format!(
                "the statement nests expressions more than {} deep (a chain of that many \
                 operators, or functions inside functions); split it, or use IN (...) for \
                 long OR chains",
                self.limits.max_expression_depth
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<String> {
        self.expressions -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let ctes = query.with.as_ref().map_or(0, |w| w.cte_tables.len());
        self.queries += 1 + ctes;
        if self.queries > self.limits.max_query_depth {
            return ControlFlow::Break(format!(
                "the statement nests queries (subqueries and WITH clauses) more than {} deep",
                self.limits.max_query_depth
            ));
        }
        // Branches of UNION / INTERSECT / EXCEPT that are not SELECTs (VALUES, TABLE t)
        // count as SELECTs; SELECT branches are counted when visited. Iterative: a long
        // UNION is a deep tree.
        let mut branches = vec![query.body.as_ref()];
        while let Some(body) = branches.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    branches.push(left);
                    branches.push(right);
                }
                SetExpr::Values(_) | SetExpr::Table(_) => self.count_select()?,
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, _select: &Select) -> ControlFlow<String> {
        self.count_select()
    }

    fn pre_visit_table_factor(&mut self, _relation: &TableFactor) -> ControlFlow<String> {
        self.relations += 1;
        if self.relations > self.limits.max_relations {
            return ControlFlow::Break(format!(
                "the statement reads more than {} relations (tables, table functions, \
                 subqueries in FROM)",
                self.limits.max_relations
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        let ctes = query.with.as_ref().map_or(0, |w| w.cte_tables.len());
        self.queries -= 1 + ctes;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn check(sql: &str) -> Result<()> {
        let limits = StatementLimits {
            max_bytes: 100_000,
            max_expression_depth: 50,
            max_query_depth: 10,
            max_selects: 20,
            max_relations: 20,
        };
        limits.check_size(sql)?;
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        limits.check_depth(&statements.pop_front().expect("one statement"))
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let terms = |n: usize| vec!["1"; n].join(" + ");
        assert!(check(&format!("SELECT {}", terms(40))).is_ok());
        let deep = check(&format!("SELECT {}", terms(60)))
            .unwrap_err()
            .to_string();
        assert!(deep.contains("more than 50 deep"), "{deep}");
        // Wide is fine: many siblings are not deep.
        let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        assert!(check(&format!("SELECT 1 WHERE 1 IN ({})", list.join(","))).is_ok());
        let ctes: Vec<String> = (0..12)
            .map(|i| format!("c{i} AS (SELECT 1 AS x)"))
            .collect();
        let many = check(&format!("WITH {} SELECT * FROM c0", ctes.join(", ")))
            .unwrap_err()
            .to_string();
        assert!(many.contains("more than 10 deep"), "{many}");
        let union = vec!["SELECT 1"; 21].join(" UNION ALL ");
        let wide = check(&union).unwrap_err().to_string();
        assert!(wide.contains("more than 20 SELECTs"), "{wide}");
        let values = vec!["VALUES (1)"; 21].join(" UNION ALL ");
        assert!(check(&values).unwrap_err().to_string().contains("SELECTs"));
        let from = vec!["range(1)"; 21].join(", ");
        let relations = check(&format!("SELECT 1 FROM {from}"))
            .unwrap_err()
            .to_string();
        assert!(relations.contains("more than 20 relations"), "{relations}");
        let long = check(&format!("SELECT '{}'", "x".repeat(100_001)))
            .unwrap_err()
            .to_string();
        assert!(long.contains("the limit is 100000 bytes"), "{long}");
    }
}
