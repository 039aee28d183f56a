//! Every `||` of a plan becomes the bounded call, and every growing function DataFusion
//! inserted itself (`array || array` is planned as its own `array_concat`, not the one
//! registered under that name) becomes the registered bounded one.
//!
//! [`BoundExpressions`] is the last analyzer rule, so constants are folded through the
//! bounds. The physical planner calls [`unbound`] before cutting out the subplans that
//! remote sources run (they get `||`, which they evaluate themselves) and [`bound`] on
//! what is left, so an optimizer rule that wrote a new `||` is bounded too.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator, ScalarUDF};
use datafusion::optimizer::AnalyzerRule;

use super::functions::is_bounded;
use super::string_concat::{self, is_string_concat};

/// The analyzer rule; see the module docs.
#[derive(Debug)]
pub(super) struct BoundExpressions {
    functions: HashMap<String, Arc<ScalarUDF>>,
}

impl BoundExpressions {
    pub(super) fn new(functions: HashMap<String, Arc<ScalarUDF>>) -> Self {
        Self { functions }
    }
}

impl AnalyzerRule for BoundExpressions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_plan(plan, &|e| self.bound_expr(e))
    }

    fn name(&self) -> &str {
        "meshql_bound_expressions"
    }
}

impl BoundExpressions {
    fn bound_expr(&self, e: Expr) -> Result<Transformed<Expr>> {
        refuse_large_casts(&e)?;
        refuse_collecting_windows(&e)?;
        if let Expr::ScalarFunction(f) = &e
            && !is_bounded(&f.func)
            && let Some(bounded) = self.functions.get(f.func.name())
        {
            let Expr::ScalarFunction(f) = e else {
                unreachable!("matched above")
            };
            let call = ScalarFunction::new_udf(Arc::clone(bounded), f.args);
            return Ok(Transformed::yes(Expr::ScalarFunction(call)));
        }
        bound_concat(e)
    }
}

/// Casts to 64-bit-offset types (`LargeUtf8`, `LargeBinary`, `LargeList`) are refused:
/// operators copy such arrays without the 2 GiB check Arrow makes on 32-bit offsets,
/// so a join repeating a large value asks for hundreds of GB at once and the failed
/// allocation aborts the process (see [`super::batches`]). Views and plain types answer
/// the same queries.
fn refuse_large_casts(e: &Expr) -> Result<()> {
    let large = |t: &str| t.contains("Large");
    let target = match e {
        Expr::Cast(c) => Some(c.field.data_type().to_string()),
        Expr::TryCast(c) => Some(c.field.data_type().to_string()),
        Expr::ScalarFunction(f) if matches!(f.func.name(), "arrow_cast" | "arrow_try_cast") => {
            match f.args.get(1) {
                Some(Expr::Literal(v, _)) => Some(v.to_string()),
                _ => None,
            }
        }
        _ => None,
    };
    match target {
        Some(t) if large(&t) => datafusion::common::plan_err!(
            "casting to {t} is not supported: meshql keeps 64-bit-offset types out of the \
             values it builds (a repeated large value could not be bounded); use Utf8, \
             Utf8View, Binary or List"
        ),
        _ => Ok(()),
    }
}

/// `array_agg` and `string_agg` as window functions are refused unless their frame is a
/// fixed number of rows: over a frame that grows with the partition (the default with
/// `ORDER BY`, or the whole partition) each row's result holds its whole frame, so
/// 20,000 rows of 1 KB build 200 GB. `GROUP BY` and a join give the same answers.
fn refuse_collecting_windows(e: &Expr) -> Result<()> {
    use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition};
    let Expr::WindowFunction(w) = e else {
        return Ok(());
    };
    let WindowFunctionDefinition::AggregateUDF(f) = &w.fun else {
        return Ok(());
    };
    if !matches!(f.name(), "array_agg" | "string_agg") {
        return Ok(());
    }
    let fixed = |b: &WindowFrameBound| match b {
        WindowFrameBound::Preceding(v) | WindowFrameBound::Following(v) => !v.is_null(),
        WindowFrameBound::CurrentRow => true,
    };
    let frame = &w.params.window_frame;
    if frame.units == WindowFrameUnits::Rows && fixed(&frame.start_bound) && fixed(&frame.end_bound)
    {
        return Ok(());
    }
    datafusion::common::plan_err!(
        "{} as a window function needs a frame of a fixed number of rows (ROWS BETWEEN n \
         PRECEDING AND m FOLLOWING): over a frame that grows with the partition, each row \
         would hold its whole frame; aggregate with GROUP BY and join instead",
        f.name()
    )
}

/// `plan` with every `||` a bounded call (in subqueries too).
pub fn bound(plan: LogicalPlan) -> Result<LogicalPlan> {
    rewrite_plan(plan, &bound_concat)
}

/// `plan` with every bounded `||` call the operator again, for SQL sent to a source.
pub fn unbound(plan: LogicalPlan) -> Result<LogicalPlan> {
    rewrite_plan(plan, &|e| match e {
        Expr::ScalarFunction(f) if is_string_concat(&f.func) && f.args.len() == 2 => {
            let mut args = f.args.into_iter();
            let (Some(left), Some(right)) = (args.next(), args.next()) else {
                unreachable!("two arguments")
            };
            Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                Operator::StringConcat,
                Box::new(right),
            ))))
        }
        e => Ok(Transformed::no(e)),
    })
}

fn bound_concat(e: Expr) -> Result<Transformed<Expr>> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) => {
            let call = ScalarFunction::new_udf(string_concat::udf(), vec![*left, *right]);
            Ok(Transformed::yes(Expr::ScalarFunction(call)))
        }
        e => Ok(Transformed::no(e)),
    }
}

/// Apply `f` to every expression of every node of `plan` and of its subqueries, keeping
/// each expression's name (as type coercion does).
fn rewrite_plan(
    plan: LogicalPlan,
    f: &dyn Fn(Expr) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let names = NamePreserver::new(&node);
        let rewritten = node.map_expressions(|e| {
            let name = names.save(&e);
            e.transform_up(f)
                .map(|t| t.update_data(|e| name.restore(e)))
        })?;
        if rewritten.transformed {
            rewritten.map_data(|node| node.recompute_schema())
        } else {
            Ok(rewritten)
        }
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    fn bounded() -> SessionContext {
        let mut state = SessionContext::new().state();
        super::super::install(&mut state).unwrap();
        SessionContext::new_with_state(state)
    }

    /// `v` is 40 MB, so any `||` of two `v` builds 80 MB: over the bound. (Computed from
    /// a column, so that planning does not fold it into a constant and copy it around.)
    const BIG: &str =
        "WITH t AS (SELECT repeat('x', 39999999 + k) AS v, k FROM (VALUES (1)) s(k)) ";

    #[tokio::test]
    async fn every_concat_is_bounded_wherever_it_is() {
        let ctx = bounded();
        for tail in [
            "SELECT length(v || v || v) FROM t",
            "SELECT k FROM t WHERE v || v = 'a'",
            "SELECT count(*) FROM t GROUP BY v || v",
            // Sorting by a constant is planned away; these two values differ.
            "SELECT i FROM (SELECT repeat(CAST(i AS VARCHAR), 20000000) AS v, i \
             FROM (VALUES (1), (2)) n(i)) ORDER BY v || v",
            "SELECT max(v || v) FROM t",
            "SELECT k FROM t GROUP BY k HAVING max(length(v || v)) > 0",
            "SELECT rank() OVER (PARTITION BY v || v ORDER BY k) FROM t",
            "SELECT CASE WHEN k = 1 THEN length(v || v) END FROM t",
            "SELECT a.k FROM t a JOIN t b ON a.v || a.v = b.v",
            "SELECT k FROM t WHERE EXISTS (SELECT 1 FROM t u WHERE u.v || t.v = 'a')",
            "SELECT (SELECT length(u.v || u.v) FROM t u) FROM t",
            "SELECT k FROM t UNION ALL SELECT length(v || v) FROM t",
            "SELECT length(v || v) FROM (SELECT DISTINCT v FROM t) d",
            // Constant: folded at planning, through the bound, counting a batch of rows
            // (8,192 copies of 10 KB).
            "SELECT length(repeat('x', 5000) || repeat('y', 5000))",
            "SELECT length(x) FROM (VALUES (repeat('x', 5000) || repeat('y', 5000))) v(x)",
        ] {
            let sql = format!("{BIG}{tail}");
            let e = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.expect_err(&sql).to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("|| would build about"), "{tail}: {e}");
        }
        // A chain of CTEs each doubling its value stops at the bound.
        let mut sql = String::from("WITH c0 AS (SELECT 'xxxxxxxx' AS v)");
        for i in 1..=40 {
            sql.push_str(&format!(", c{i} AS (SELECT v || v AS v FROM c{})", i - 1));
        }
        sql.push_str(" SELECT length(v) FROM c40");
        let e = ctx.sql(&sql).await.unwrap().collect().await.unwrap_err();
        assert!(e.to_string().contains("|| would build about"), "{e}");
    }

    /// The bounded `||` answers as DataFusion's own: values, NULLs, types, names.
    #[tokio::test]
    async fn bounded_concat_answers_like_the_operator() {
        let (plain, ctx) = (SessionContext::new(), bounded());
        for sql in [
            "SELECT 'a' || 'b'",
            "SELECT 'a' || NULL, NULL || 'b'",
            "SELECT 'a' || 1, 2 || 'b', 'x' || 1.5, 'd' || DATE '2024-01-02'",
            "SELECT v || w, w || v || v FROM (VALUES ('a', 'b'), (NULL, 'c'), ('d', NULL)) t(v, w)",
            "SELECT arrow_cast(v, 'Utf8View') || 'z' FROM (VALUES ('a'), (NULL)) t(v)",
            "SELECT X'AB' || X'CD'",
            "SELECT make_array(1, 2) || make_array(3)",
            "SELECT k FROM (VALUES (1, 'a'), (2, 'b')) t(k, v) WHERE v || 'x' = 'bx'",
            "SELECT v || 'x', count(*) FROM (VALUES ('a'), ('a'), ('b')) t(v) \
             GROUP BY v || 'x' ORDER BY v || 'x'",
            "SELECT upper(v || v) AS u FROM (VALUES ('ab')) t(v)",
        ] {
            let want = plain.sql(sql).await.unwrap();
            let got = ctx.sql(sql).await.unwrap();
            assert_eq!(
                want.schema().as_arrow(),
                got.schema().as_arrow(),
                "schema of {sql}"
            );
            let (want, got) = (want.collect().await.unwrap(), got.collect().await.unwrap());
            assert_eq!(
                pretty_format_batches(&want).unwrap().to_string(),
                pretty_format_batches(&got).unwrap().to_string(),
                "{sql}"
            );
        }
    }

    /// Long chains plan as the operator's do: naming a call does not rebuild its
    /// arguments (that made a 2,000-term chain take minutes).
    #[test]
    fn long_chains_plan_and_run() {
        let chain = vec!["'a'"; 2000].join(" || ");
        let sql = format!("SELECT length({chain}), v || {chain} FROM (VALUES ('b')) t(v)");
        // Planning recurses once per term: a big stack, as the server gives statements.
        let run = move || -> datafusion::common::Result<Option<i32>> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    let batches = bounded().sql(&sql).await?.collect().await?;
                    Ok(batches[0]
                        .column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int32Array>()
                        .map(|a| a.value(0)))
                })
        };
        let got = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(got, Some(2000));
    }

    #[tokio::test]
    async fn casts_to_large_types_are_refused() {
        let ctx = bounded();
        for sql in [
            "SELECT arrow_cast('a', 'LargeUtf8')",
            "SELECT arrow_try_cast(v, 'LargeBinary') FROM (VALUES (X'00')) t(v)",
            "SELECT arrow_cast(make_array(1), 'LargeList(Int64)')",
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.expect_err(sql).to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("is not supported: meshql keeps 64-bit"),
                "{sql}: {e}"
            );
        }
        for sql in [
            "SELECT arrow_cast('a', 'Utf8View')",
            "SELECT CAST(1 AS VARCHAR)",
        ] {
            assert!(ctx.sql(sql).await.unwrap().collect().await.is_ok(), "{sql}");
        }
    }

    #[tokio::test]
    async fn collecting_windows_need_fixed_frames() {
        let ctx = bounded();
        let t =
            "(SELECT CAST(i AS VARCHAR) AS v, i, i % 3 AS k FROM generate_series(1, 10) g(i)) t";
        for sql in [
            format!("SELECT array_agg(v) OVER (ORDER BY i) FROM {t}"),
            format!("SELECT array_agg(v) OVER (PARTITION BY k) FROM {t}"),
            format!(
                "SELECT string_agg(v, ',') OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) FROM {t}"
            ),
            format!(
                "SELECT array_agg(v) OVER (ORDER BY i RANGE BETWEEN 2 PRECEDING AND CURRENT ROW) FROM {t}"
            ),
        ] {
            let e = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.map(|_| ()).unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains("needs a frame of a fixed number of rows"),
                "{sql}: {e}"
            );
        }
        let sql = format!(
            "SELECT array_agg(v) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW), \
             first_value(v) OVER (ORDER BY i), array_agg(v) FROM {t}"
        );
        let sql = sql.replace(", array_agg(v) FROM", " FROM");
        assert!(ctx.sql(&sql).await.unwrap().collect().await.is_ok());
    }

    #[tokio::test]
    async fn plans_show_the_bounded_call_and_sources_get_the_operator_back() {
        let ctx = bounded();
        let plan = ctx
            .sql("SELECT v || 'x' FROM (VALUES ('a')) t(v)")
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let text = plan.display_indent().to_string();
        assert!(text.contains("||(t.v, Utf8(\"x\"))"), "{text}");
        let restored = super::unbound(plan).unwrap().display_indent().to_string();
        assert!(restored.contains("t.v || Utf8(\"x\")"), "{restored}");
    }
}
