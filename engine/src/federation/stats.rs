//! Statistics for remote statements, from the source's own row counts. Without them
//! DataFusion cannot tell which side of a cross-source join is small, so it may build
//! its hash table from a large remote table and read a small lake table as the probe.
//!
//! A statement may join several tables of one source and aggregate them, so the
//! estimate walks the whole plan with the rules DataFusion uses where it knows no
//! more: a filter keeps a fifth, an equi-join is as large as its larger side (a
//! foreign key into a key), a grouping as large as its input.

use std::collections::HashMap;
use std::future::Future;

use datafusion::common::stats::Precision;
use datafusion::common::{Statistics, TableReference};
use datafusion::logical_expr::{FetchType, JoinType, LogicalPlan};

/// DataFusion's default selectivity for a filter it knows nothing about.
const FILTER_SELECTIVITY: f64 = 0.2;

/// Every table `plan` reads, once each.
fn scanned_tables(plan: &LogicalPlan) -> Vec<TableReference> {
    let mut tables = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && !tables.contains(&scan.table_name)
        {
            tables.push(scan.table_name.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    tables
}

/// Estimates for `plan` given the row counts of the tables it reads; unknown when a
/// table's count is missing or the plan has a node the estimate has no rule for.
fn plan_statistics(plan: &LogicalPlan, table_rows: &HashMap<TableReference, u64>) -> Statistics {
    let schema = plan.schema().as_arrow();
    let mut stats = Statistics::new_unknown(schema);
    let Some(rows) = estimate_rows(plan, table_rows) else {
        return stats;
    };
    let rows = rows.ceil() as usize;
    let width: usize = schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(24))
        .sum();
    stats.num_rows = Precision::Inexact(rows);
    stats.total_byte_size = Precision::Inexact(rows.saturating_mul(width.max(1)));
    stats
}

/// Estimates for `plan` with each table's rows from `row_count` (asked once per table;
/// a table it cannot count leaves the estimate unknown without asking further).
pub async fn remote_statistics<F, Fut>(plan: &LogicalPlan, mut row_count: F) -> Statistics
where
    F: FnMut(TableReference) -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let mut counts = HashMap::new();
    for table in scanned_tables(plan) {
        match row_count(table.clone()).await {
            Some(rows) => counts.insert(table, rows),
            None => return Statistics::new_unknown(plan.schema().as_arrow()),
        };
    }
    plan_statistics(plan, &counts)
}

fn estimate_rows(plan: &LogicalPlan, table_rows: &HashMap<TableReference, u64>) -> Option<f64> {
    let input = |i: usize| estimate_rows(plan.inputs().get(i)?, table_rows);
    let limited = |rows: f64, fetch: Option<usize>| match fetch {
        Some(fetch) => rows.min(fetch as f64),
        None => rows,
    };
    Some(match plan {
        LogicalPlan::TableScan(scan) => {
            let mut rows = *table_rows.get(&scan.table_name)? as f64;
            if !scan.filters.is_empty() {
                rows *= FILTER_SELECTIVITY;
            }
            limited(rows, scan.fetch)
        }
        LogicalPlan::Filter(_) => input(0)? * FILTER_SELECTIVITY,
        LogicalPlan::Projection(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Window(_)
        | LogicalPlan::Unnest(_) => input(0)?,
        LogicalPlan::Sort(sort) => limited(input(0)?, sort.fetch),
        LogicalPlan::Limit(limit) => match limit.get_fetch_type() {
            Ok(FetchType::Literal(fetch)) => limited(input(0)?, fetch),
            _ => input(0)?,
        },
        LogicalPlan::Aggregate(aggregate) if aggregate.group_expr.is_empty() => 1.0,
        LogicalPlan::Aggregate(_) => input(0)?,
        LogicalPlan::Join(join) => {
            let (left, right) = (input(0)?, input(1)?);
            if join.on.is_empty() {
                // A cross join, perhaps with a filter.
                let rows = left * right;
                return Some(match join.filter {
                    Some(_) => rows * FILTER_SELECTIVITY,
                    None => rows,
                });
            }
            match join.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right => left.max(right),
                JoinType::Full => left + right,
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => left,
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => right,
            }
        }
        LogicalPlan::Union(_) => {
            let mut rows = 0.0;
            for i in 0..plan.inputs().len() {
                rows += input(i)?;
            }
            rows
        }
        LogicalPlan::Values(values) => values.values.len() as f64,
        LogicalPlan::EmptyRelation(empty) => f64::from(u8::from(empty.produce_one_row)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::count::count;
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit, table_scan};

    use super::*;

    fn table(name: &str, key: &str) -> LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new(key, DataType::Int64, false),
            Field::new(format!("{key}_comment"), DataType::Utf8, false),
        ]);
        table_scan(Some(name), &schema, None).expect("scan")
    }

    fn counts() -> HashMap<TableReference, u64> {
        HashMap::from([
            (TableReference::from("public.orders"), 1000),
            (TableReference::from("public.customer"), 100),
        ])
    }

    fn rows(plan: LogicalPlanBuilder) -> Precision<usize> {
        plan_statistics(&plan.build().expect("plan"), &counts()).num_rows
    }

    #[test]
    fn filters_and_limits_narrow_the_table_count() {
        let plain = table("public.orders", "o").build().expect("plan");
        assert_eq!(
            scanned_tables(&plain),
            vec![TableReference::from("public.orders")]
        );
        let stats = plan_statistics(&plain, &counts());
        assert_eq!(stats.num_rows, Precision::Inexact(1000));
        assert_eq!(stats.total_byte_size, Precision::Inexact(1000 * (8 + 24)));

        let filtered = table("public.orders", "o")
            .filter(col("o").gt(lit(5)))
            .expect("filter");
        assert_eq!(rows(filtered), Precision::Inexact(200));
        let limited = table("public.orders", "o")
            .limit(0, Some(7))
            .expect("limit");
        assert_eq!(rows(limited), Precision::Inexact(7));
    }

    #[test]
    fn joins_take_the_larger_side_and_totals_are_one_row() {
        let joined = || {
            table("public.customer", "c")
                .join(
                    table("public.orders", "o").build().expect("orders"),
                    JoinType::Inner,
                    (vec!["c"], vec!["o"]),
                    None,
                )
                .expect("join")
        };
        assert_eq!(
            scanned_tables(&joined().build().expect("plan")),
            vec![
                TableReference::from("public.customer"),
                TableReference::from("public.orders")
            ]
        );
        assert_eq!(rows(joined()), Precision::Inexact(1000));
        let grouped = joined()
            .aggregate([col("c")], [count(col("o"))])
            .expect("group");
        assert_eq!(rows(grouped), Precision::Inexact(1000));
        let total = joined()
            .aggregate(
                Vec::<datafusion::logical_expr::Expr>::new(),
                [count(col("o"))],
            )
            .expect("total");
        assert_eq!(rows(total), Precision::Inexact(1));
        let crossed = table("public.customer", "c")
            .cross_join(
                table("public.customer", "c2")
                    .alias("c2")
                    .expect("alias")
                    .build()
                    .expect("plan"),
            )
            .expect("cross");
        assert_eq!(rows(crossed), Precision::Inexact(100 * 100));
    }

    #[test]
    fn a_table_without_a_count_leaves_the_estimate_unknown() {
        let joined = table("public.customer", "c")
            .join(
                table("public.lineitem", "l").build().expect("lineitem"),
                JoinType::Inner,
                (vec!["c"], vec!["l"]),
                None,
            )
            .expect("join");
        assert_eq!(rows(joined), Precision::Absent);
    }
}
