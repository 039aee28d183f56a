//! Whole-subplan pushdown. After DataFusion's logical optimizer has pushed filters,
//! projections and limits into the scans, every maximal subtree that reads one remote
//! source (same server and credentials) and that the source can run with DataFusion's
//! meaning is replaced by one SQL statement for that source.
//!
//! This runs once, as the first step of physical planning, rather than as an optimizer
//! rule: datafusion-federation's own rule runs before filter pushdown and projection
//! pruning, so a cross-source join would federate each side as a bare `SELECT *`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality};
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, LogicalPlan, Projection, SubqueryAlias, TableScan, TableSource,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::sql::unparser::Unparser;
use datafusion_federation::{FederatedPlanNode, FederatedPlanner, FederationPlanner};

use super::capability::SqlDialect;
use super::remote::{RemoteSource, RemoteTable};
use crate::mesh::port::PortTable;
use crate::optimizer::MeshqlOptions;

/// The session's query planner: federation first, then DataFusion's planner.
#[derive(Debug)]
/// `meshql.subplan_pushdown` off: each remote table is still scanned with its own
/// columns, filters and limit, but joins, aggregates and sorts run here (for comparisons
/// and as an escape hatch).
pub struct MeshQueryPlanner;

#[async_trait]
impl QueryPlanner for MeshQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let options = MeshqlOptions::of(session.config_options());
        // Sources evaluate `||` themselves; what stays here is bounded again (an
        // optimizer rule may have written a new `||`).
        let plan = if options.subplan_pushdown {
            federate(crate::bounded::unbound(logical_plan.clone())?)?
        } else {
            logical_plan.clone()
        };
        let plan = crate::bounded::bound(plan)?;
        let physical =
            DefaultPhysicalPlanner::with_extension_planners(vec![
                Arc::new(FederatedPlanner::new()),
            ])
            .create_physical_plan(&plan, session)
            .await?;
        let config = session.config_options();
        // These two need the plan as a whole, federated scans included, so they run
        // here rather than among the optimizer's rules; they switch off alike.
        let gated = if options.remote_scans_wait_for_join_keys {
            super::dynamic::gate_remote_scans(physical, config)?
        } else {
            physical
        };
        let filtered = if options.join_keys_at_distant_scans {
            super::scan_join_filters::filter_scans_by_distant_joins(gated, config)?
        } else {
            gated
        };
        // Last, over the final plan: not an optimization, a bound.
        crate::bounded::bound_batches(filtered)
    }
}

/// Replace each maximal single-source subtree by a remote statement.
pub fn federate(plan: LogicalPlan) -> Result<LogicalPlan> {
    let flattened = inline_projections(drop_inner_projections(plan.clone(), false)?)?;
    if let Some(candidate) = with_select_list(flattened)?
        && !stacked_select(&candidate, false)
        && let Some(source) = single_source(&candidate)
    {
        return remote_node(candidate, source);
    }
    plan.map_children(|child| federate(child).map(Transformed::yes))
        .map(|t| t.data)
}

/// Column-only projections under another projection or aggregate (projection pruning
/// leaves them below filters): they add nothing to the SQL, and the unparser would turn
/// them into a derived table that the columns above it no longer see.
fn drop_inner_projections(plan: LogicalPlan, inside_select: bool) -> Result<LogicalPlan> {
    let removable = |p: &LogicalPlan| match p {
        LogicalPlan::Projection(p) => p.expr.iter().all(|e| matches!(e, Expr::Column(_))),
        _ => false,
    };
    match plan {
        // Nodes whose schema is their input's: a removable projection below them can go.
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Projection(_)
        | LogicalPlan::Aggregate(_) => {
            let select = inside_select
                || matches!(plan, LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_));
            plan.map_children(|child| {
                let child = if select && removable(&child) {
                    match child {
                        LogicalPlan::Projection(p) => Arc::unwrap_or_clone(p.input),
                        other => other,
                    }
                } else {
                    child
                };
                drop_inner_projections(child, select).map(Transformed::yes)
            })
            .map(|t| t.data)
        }
        LogicalPlan::SubqueryAlias(_) => plan
            .map_children(|c| drop_inner_projections(c, false).map(Transformed::yes))
            .map(|t| t.data),
        other => other
            .map_children(|c| drop_inner_projections(c, inside_select).map(Transformed::yes))
            .map(|t| t.data),
    }
}

/// A projection that computes columns for the aggregate or projection right above it
/// (DataFusion's common subexpression elimination makes these, e.g. TPC-H Q1's
/// `l_extendedprice * (1 - l_discount)`) is written into that node instead, so the
/// whole `SELECT ... GROUP BY` can be one statement. Output names are kept with
/// aliases. Skipped when a grouping key would change or an expression is volatile
/// (inlining may evaluate it more than once).
fn inline_projections(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let inner = match &node {
            LogicalPlan::Aggregate(a) => a.input.as_ref(),
            LogicalPlan::Projection(p) => p.input.as_ref(),
            _ => return Ok(Transformed::no(node)),
        };
        let LogicalPlan::Projection(inner) = inner else {
            return Ok(Transformed::no(node));
        };
        if inner.expr.iter().any(Expr::is_volatile) {
            return Ok(Transformed::no(node));
        }
        let inner = inner.clone();
        let replace = |e: &Expr| -> Result<Expr> {
            e.clone()
                .transform(|e| match e {
                    Expr::Column(c) => match inner.schema.index_of_column(&c) {
                        Ok(i) => Ok(Transformed::yes(inner.expr[i].clone().unalias())),
                        Err(_) => Ok(Transformed::no(Expr::Column(c))),
                    },
                    other => Ok(Transformed::no(other)),
                })
                .map(|t| t.data)
        };
        let input = Arc::clone(&inner.input);
        match node {
            LogicalPlan::Aggregate(a) => {
                let group = a
                    .group_expr
                    .iter()
                    .map(replace)
                    .collect::<Result<Vec<_>>>()?;
                if group != a.group_expr {
                    return Ok(Transformed::no(LogicalPlan::Aggregate(a)));
                }
                // Aggregate outputs are unqualified: the name is enough.
                let aggr = a
                    .aggr_expr
                    .iter()
                    .map(|e| replace(e)?.alias_if_changed(e.schema_name().to_string()))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Transformed::yes(LogicalPlan::Aggregate(
                    Aggregate::try_new(input, group, aggr)?,
                )))
            }
            LogicalPlan::Projection(p) => {
                let exprs = p
                    .expr
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let replaced = replace(e)?;
                        if &replaced == e {
                            return Ok(replaced);
                        }
                        let (qualifier, field) = p.schema.qualified_field(i);
                        Ok(replaced
                            .unalias()
                            .alias_qualified(qualifier.cloned(), field.name()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Transformed::yes(LogicalPlan::Projection(
                    Projection::try_new(exprs, input)?,
                )))
            }
            other => Ok(Transformed::no(other)),
        }
    })
    .map(|t| t.data)
}

/// The plan under a projection of its own columns, so the statement's columns come in
/// the plan's order (results are matched to the plan by position).
/// None when sorts, limits or filters sit on something other than a projection: the
/// unparser would write them as a derived table, so only the part below is sent.
fn with_select_list(plan: LogicalPlan) -> Result<Option<LogicalPlan>> {
    let mut below = &plan;
    while let LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Filter(_) = below {
        below = below.inputs()[0];
    }
    match below {
        // A scan's columns are written in its projection's order.
        LogicalPlan::Projection(_) | LogicalPlan::TableScan(_) => return Ok(Some(plan)),
        _ if !std::ptr::eq(below, &plan) => return Ok(None),
        _ => {}
    }
    let columns = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect::<Vec<_>>();
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        columns,
        Arc::new(plan),
    )?)))
}

/// A projection below another (or below an aggregate) without an alias between them:
/// the unparser writes such plans as derived tables whose columns the outer query then
/// names wrongly, so they stay local. A projection directly over an aggregate is the
/// ordinary `SELECT ... GROUP BY`.
fn stacked_select(plan: &LogicalPlan, inside_select: bool) -> bool {
    match plan {
        LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) if inside_select => true,
        LogicalPlan::Aggregate(_) => plan.inputs().iter().any(|c| stacked_select(c, true)),
        LogicalPlan::Projection(p) => match p.input.as_ref() {
            LogicalPlan::Aggregate(a) => stacked_select(&a.input, true),
            input => stacked_select(input, true),
        },
        LogicalPlan::SubqueryAlias(_) => plan.inputs().iter().any(|c| stacked_select(c, false)),
        _ => plan
            .inputs()
            .iter()
            .any(|c| stacked_select(c, inside_select)),
    }
}

/// The remote table behind a scan's source, seen through the port wrapper.
fn remote_table(
    source: &Arc<dyn TableSource>,
) -> Option<Arc<dyn datafusion::catalog::TableProvider>> {
    let provider = source_as_provider(source).ok()?;
    let inner = match provider.downcast_ref::<PortTable>() {
        Some(port) => Arc::clone(port.inner()),
        None => provider,
    };
    inner.is::<RemoteTable>().then_some(inner)
}

fn with_remote<T>(source: &Arc<dyn TableSource>, f: impl FnOnce(&RemoteTable) -> T) -> Option<T> {
    let table = remote_table(source)?;
    table.downcast_ref::<RemoteTable>().map(f)
}

/// The source this whole subtree can be sent to, if any.
fn single_source(plan: &LogicalPlan) -> Option<Arc<dyn RemoteSource>> {
    let mut found: Option<Arc<dyn RemoteSource>> = None;
    let mut ok = true;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match with_remote(&scan.source, |t| Arc::clone(t.source())) {
                Some(source) => match &found {
                    None => found = Some(source),
                    Some(seen) if seen.context() == source.context() => {}
                    Some(_) => ok = false,
                },
                None => ok = false,
            }
        }
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    let source = found.filter(|_| ok)?;
    // Two unaliased ports with the same table name would get the same SQL alias.
    let mut names = std::collections::HashSet::new();
    let _ = plan.apply(|node| {
        match node {
            LogicalPlan::SubqueryAlias(_) => return Ok(TreeNodeRecursion::Jump),
            LogicalPlan::TableScan(scan) => {
                ok &= names.insert(scan.table_name.table().to_string());
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if !ok {
        return None;
    }
    let dialect = source.dialect();
    let _ = plan.apply(|node| {
        ok = node_ok(node, dialect);
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    // The unparser is the final judge of what can be written as SQL.
    let sql = ok
        && Unparser::new(dialect.unparser_dialect().as_ref())
            .plan_to_sql(plan)
            .is_ok();
    sql.then_some(source)
}

fn node_ok(node: &LogicalPlan, dialect: SqlDialect) -> bool {
    let all = |exprs: &[Expr]| exprs.iter().all(|e| dialect.can_run(e));
    match node {
        LogicalPlan::TableScan(scan) => all(&scan.filters),
        LogicalPlan::Projection(p) => all(&p.expr),
        LogicalPlan::Filter(f) => dialect.can_run(&f.predicate),
        LogicalPlan::Aggregate(a) => {
            !a.group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)))
                && all(&a.group_expr)
                && all(&a.aggr_expr)
        }
        LogicalPlan::Sort(s) => s.expr.iter().all(|e| dialect.can_run(&e.expr)),
        LogicalPlan::Limit(_) | LogicalPlan::SubqueryAlias(_) => true,
        // The unparser mishandles semi and anti joins; null-equal keys have no SQL form.
        LogicalPlan::Join(j) => {
            matches!(
                j.join_type,
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
            ) && j.null_equality == NullEquality::NullEqualsNothing
                && j.on
                    .iter()
                    .all(|(l, r)| dialect.can_run(l) && dialect.can_run(r))
                && j.filter.as_ref().is_none_or(|f| dialect.can_run(f))
        }
        _ => false,
    }
}

/// The subtree as a remote statement. Each scan reads the source's own table under an
/// alias with the port's name, so the rest of the subtree's SQL can keep referring to
/// the port (the unparser writes only the last part of a qualifier).
fn remote_node(plan: LogicalPlan, source: Arc<dyn RemoteSource>) -> Result<LogicalPlan> {
    let plan = unproject_sorts(plan)?
        .transform_down(|node| match node {
            LogicalPlan::SubqueryAlias(alias) => match alias.input.as_ref() {
                LogicalPlan::TableScan(scan) => {
                    let Some(renamed) = remote_scan(scan) else {
                        return Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias)));
                    };
                    let aliased = SubqueryAlias::try_new(Arc::new(renamed), alias.alias.clone())?;
                    Ok(Transformed::new(
                        LogicalPlan::SubqueryAlias(aliased),
                        true,
                        TreeNodeRecursion::Jump,
                    ))
                }
                _ => Ok(Transformed::no(LogicalPlan::SubqueryAlias(alias))),
            },
            LogicalPlan::TableScan(scan) => {
                let Some(renamed) = remote_scan(&scan) else {
                    return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
                };
                // Aliased by the full port name, the schema is the scan's own.
                let aliased = SubqueryAlias::try_new(Arc::new(renamed), scan.table_name.clone())?;
                Ok(Transformed::yes(LogicalPlan::SubqueryAlias(aliased)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data;
    let planner = Arc::new(SourcePlanner { source });
    Ok(LogicalPlan::Extension(Extension {
        node: Arc::new(FederatedPlanNode::new(plan, planner)),
    }))
}

/// A sort by a column that its `SELECT` computes without an alias (`ORDER BY 1` over
/// `a * 2` or `a || b`) sorts by that expression instead. The unparser writes such a sort
/// as `ORDER BY "a * 2"`, a column the source does not have; it replaces only function
/// calls (datafusion-sql's `unproject_sort_expr`; no upstream issue yet). Aliased items,
/// plain columns and literals are left as they are: the source knows an alias, and a
/// literal in `ORDER BY` means something else in SQL (`ORDER BY 1` is a position).
fn unproject_sorts(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Sort(sort) = &node else {
            return Ok(Transformed::no(node));
        };
        let LogicalPlan::Projection(projection) = sort.input.as_ref() else {
            return Ok(Transformed::no(node));
        };
        let computed = |c: &datafusion::common::Column| {
            let i = projection.schema.index_of_column(c).ok()?;
            match &projection.expr[i] {
                Expr::Column(_) | Expr::Literal(..) | Expr::Alias(_) => None,
                e => Some(e.clone()),
            }
        };
        let mut changed = false;
        let mut sort = sort.clone();
        for item in &mut sort.expr {
            item.expr = item
                .expr
                .clone()
                .transform(|e| match &e {
                    Expr::Column(c) => Ok(match computed(c) {
                        Some(computed) => {
                            changed = true;
                            Transformed::yes(computed)
                        }
                        None => Transformed::no(e),
                    }),
                    _ => Ok(Transformed::no(e)),
                })?
                .data;
        }
        Ok(if changed {
            Transformed::yes(LogicalPlan::Sort(sort))
        } else {
            Transformed::no(node)
        })
    })
    .map(|t| t.data)
}

/// A scan of a remote port as a scan of the source's own table.
fn remote_scan(scan: &TableScan) -> Option<LogicalPlan> {
    let (source, remote_name) = with_remote(&scan.source, |t| {
        (t.federated_source(), t.remote_name().clone())
    })?;
    Some(LogicalPlan::TableScan(TableScan {
        table_name: remote_name,
        source,
        ..scan.clone()
    }))
}

/// Plans a federated subtree for the session that runs it.
struct SourcePlanner {
    source: Arc<dyn RemoteSource>,
}

#[async_trait]
impl FederationPlanner for SourcePlanner {
    async fn plan_federation(
        &self,
        node: &FederatedPlanNode,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        RemoteTable::plan_remote(&self.source, node.plan().clone(), session).await
    }
}
