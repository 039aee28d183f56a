//! Planning TPC-H queries through the mesh catalog: `session(identity)` + `plan(sql)` on
//! the `lake` layout, open, and governed for a user under a row filter with a subquery
//! and a mask: parsing, the mesh catalog and the policy rewrite (DataFusion optimizes and
//! plans physically when the statement runs, which this does not measure).
//!
//! `cargo bench --bench tpch_planning` (see docs/benchmarks.md#planning-cost-of-policies).

// A benchmark, like a test, should stop at the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use meshql_engine::{Identity, MeshEngine};
use meshql_tpch::layout::{port, write_lake};
use meshql_tpch::queries::{for_scale_factor, qualify};

const GOVERNED: &str = "
access:
  users:
    analyst: { password: x, groups: [analysts] }
  rules:
    - principals: [group:analysts]
      allow: [\"sales.*.*\", \"supply.*.*\", \"customer.*.*\"]
      row_filters:
        customer.profile.customer: \"c_nationkey IN (SELECT n_nationkey FROM customer.geo.nation WHERE n_regionkey = 3)\"
      column_masks:
        customer.profile.customer.c_phone: \"'***'\"
";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh = rt.block_on(write_lake(dir.path(), 0.01)).unwrap();
    let governed_mesh = dir.path().join("governed.yaml");
    let text = std::fs::read_to_string(&mesh).unwrap();
    std::fs::write(&governed_mesh, format!("{text}{GOVERNED}")).unwrap();
    let connectors = meshql_connectors::default_connectors();
    let open = rt.block_on(MeshEngine::open(&mesh, &connectors)).unwrap();
    let governed = rt
        .block_on(MeshEngine::open(&governed_mesh, &connectors))
        .unwrap();
    assert!(governed.problems().is_empty(), "{:?}", governed.problems());
    let anyone = Identity::anonymous();
    let analyst = Identity::new("analyst", vec!["analysts".into()]);

    let queries = for_scale_factor(0.01);
    for number in [1u8, 5, 9, 21] {
        let sql = qualify(&queries[usize::from(number) - 1].1, |t| port(t).to_string());
        let mut group = c.benchmark_group(format!("plan TPC-H Q{number}"));
        for (who, engine, identity) in [
            ("open mesh", &open, &anyone),
            ("governed, filter+mask", &governed, &analyst),
        ] {
            // Each must plan, or the comparison means nothing.
            rt.block_on(async { engine.session(identity).plan(&sql).await.expect(&sql) });
            group.bench_function(who, |b| {
                b.iter(|| rt.block_on(async { engine.session(identity).plan(&sql).await.unwrap() }))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
