//! Statistics for remote statements, from the source's own row counts. Without them
//! DataFusion cannot tell which side of a cross-source join is small, so it may build
//! its hash table from a large remote table and read a small lake table as the probe.

use datafusion::common::stats::Precision;
use datafusion::common::{Statistics, TableReference};
use datafusion::logical_expr::LogicalPlan;

/// DataFusion's default selectivity for a filter it knows nothing about.
const FILTER_SELECTIVITY: f64 = 0.2;

/// The one table `plan` reads, if it only filters, projects, sorts and limits it.
pub fn scanned_table(plan: &LogicalPlan) -> Option<TableReference> {
    match plan {
        LogicalPlan::TableScan(scan) => Some(scan.table_name.clone()),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => scanned_table(plan.inputs().first()?),
        _ => None,
    }
}

/// Estimates for `plan` (see [`scanned_table`]) over a table of `table_rows` rows.
pub fn scan_statistics(plan: &LogicalPlan, table_rows: u64) -> Statistics {
    let schema = plan.schema().as_arrow();
    let mut rows = table_rows as f64;
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Filter(_) => rows *= FILTER_SELECTIVITY,
            LogicalPlan::TableScan(scan) => {
                if !scan.filters.is_empty() {
                    rows *= FILTER_SELECTIVITY;
                }
                if let Some(fetch) = scan.fetch {
                    rows = rows.min(fetch as f64);
                }
            }
            LogicalPlan::Limit(limit) => {
                if let Ok(datafusion::logical_expr::FetchType::Literal(Some(fetch))) =
                    limit.get_fetch_type()
                {
                    rows = rows.min(fetch as f64);
                }
            }
            _ => {}
        }
        match node.inputs().first() {
            Some(input) => node = input,
            None => break,
        }
    }
    let rows = rows.ceil() as usize;
    let width: usize = schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(24))
        .sum();
    let mut stats = Statistics::new_unknown(schema);
    stats.num_rows = Precision::Inexact(rows);
    stats.total_byte_size = Precision::Inexact(rows.saturating_mul(width.max(1)));
    stats
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::{LogicalPlanBuilder, col, lit, table_scan};

    use super::*;

    fn orders() -> LogicalPlanBuilder {
        let schema = Schema::new(vec![
            Field::new("o_orderkey", DataType::Int64, false),
            Field::new("o_comment", DataType::Utf8, false),
        ]);
        table_scan(Some("public.orders"), &schema, None).expect("scan")
    }

    #[test]
    fn filters_and_limits_narrow_the_table_count() {
        let plain = orders().build().expect("plan");
        assert_eq!(
            scanned_table(&plain),
            Some(TableReference::from("public.orders"))
        );
        let stats = scan_statistics(&plain, 1000);
        assert_eq!(stats.num_rows, Precision::Inexact(1000));
        assert_eq!(stats.total_byte_size, Precision::Inexact(1000 * (8 + 24)));

        let filtered = orders()
            .filter(col("o_orderkey").gt(lit(5)))
            .expect("filter")
            .build()
            .expect("plan");
        assert_eq!(
            scan_statistics(&filtered, 1000).num_rows,
            Precision::Inexact(200)
        );
        let limited = orders()
            .limit(0, Some(7))
            .expect("limit")
            .build()
            .expect("plan");
        assert_eq!(
            scan_statistics(&limited, 1000).num_rows,
            Precision::Inexact(7)
        );
    }

    #[test]
    fn joins_and_aggregates_have_no_single_table() {
        let other = orders().alias("o2").expect("alias").build().expect("plan");
        let joined = orders()
            .cross_join(other)
            .expect("join")
            .build()
            .expect("plan");
        assert_eq!(scanned_table(&joined), None);
    }
}
