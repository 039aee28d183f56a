//! What access policies cost at planning time: `session(identity)` + `plan(sql)` for the
//! same statements on an open mesh, on a governed mesh as an admin (no policy applies)
//! and as a user under row filters, masks and a tag policy, with 40 rules in the file.
//!
//! `cargo bench --bench policy_planning` (latest figures:
//! docs/benchmarks.md#planning-cost-of-policies).

// A benchmark, like a test, should stop at the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use meshql_engine::{Identity, MeshEngine};

const DOMAINS: usize = 3;
const PRODUCTS: usize = 2;
const PORTS: usize = 4;
const RULES: usize = 40;

/// A mesh of 24 CSV ports; `governed` appends users and 40 rules.
fn write_mesh(dir: &Path, governed: bool) -> std::path::PathBuf {
    let mut csv = String::from("id,region,name,phone,amount\n");
    for i in 0..100 {
        writeln!(csv, "{i},{},name {i},555-{i:04},{}.5", i % 5, i * 3).unwrap();
    }
    let mut yaml =
        String::from("version: 1\nsources:\n  files: { kind: local, root: ./data }\ndomains:\n");
    for d in 0..DOMAINS {
        writeln!(yaml, "  d{d}:\n    owner: team{d}\n    products:").unwrap();
        for p in 0..PRODUCTS {
            writeln!(yaml, "      p{p}:\n        output_ports:").unwrap();
            for t in 0..PORTS {
                let file = format!("d{d}_p{p}_t{t}.csv");
                std::fs::create_dir_all(dir.join("data")).unwrap();
                std::fs::write(dir.join("data").join(&file), &csv).unwrap();
                writeln!(
                    yaml,
                    "          t{t}:\n            source: files\n            format: csv\n            path: {file}\n            options: {{ header: true }}\n            columns:\n              phone: {{ tags: [pii] }}"
                )
                .unwrap();
            }
        }
    }
    if governed {
        yaml.push_str("access:\n  users:\n    admin: { password: x, groups: [platform] }\n");
        yaml.push_str("    analyst: { password: x, groups: [g0, g1, g2] }\n  admins: [group:platform]\n  rules:\n");
        for r in 0..RULES {
            let d = r % DOMAINS;
            writeln!(
                yaml,
                "    - principals: [group:g{}]\n      allow: [\"d{d}.*.*\"]",
                r % 10
            )
            .unwrap();
            if r % 4 == 0 {
                writeln!(
                    yaml,
                    "      row_filters:\n        d{d}.p0.t0: \"region IN (SELECT region FROM d{d}.p1.t3 WHERE id < {r})\"\n        d{d}.p0.t1: \"amount > {r}\"\n      column_masks:\n        d{d}.p0.t0.name: \"'x' || substr(name, 3)\""
                )
                .unwrap();
            }
        }
        yaml.push_str(
            "  tag_policies:\n    - { tag: pii, mask: \"NULL\", unless: [group:platform] }\n",
        );
    }
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, yaml).unwrap();
    mesh
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open_dir = tempfile::tempdir().unwrap();
    let governed_dir = tempfile::tempdir().unwrap();
    let connectors = meshql_connectors::default_connectors();
    let open = rt
        .block_on(MeshEngine::open(
            &write_mesh(open_dir.path(), false),
            &connectors,
        ))
        .unwrap();
    let governed = rt
        .block_on(MeshEngine::open(
            &write_mesh(governed_dir.path(), true),
            &connectors,
        ))
        .unwrap();
    assert!(governed.problems().is_empty(), "{:?}", governed.problems());
    let admin = Identity::new("admin", vec!["platform".into()]);
    let analyst = Identity::new("analyst", vec!["g0".into(), "g1".into(), "g2".into()]);
    let anyone = Identity::anonymous();

    let statements = [
        (
            "one port",
            "SELECT name, phone, amount FROM d0.p0.t0 WHERE amount > 10",
        ),
        (
            "join of two governed ports",
            "SELECT a.name, sum(b.amount) FROM d0.p0.t0 a JOIN d0.p0.t1 b ON a.id = b.id WHERE a.region = 1 GROUP BY a.name",
        ),
    ];
    for (what, sql) in statements {
        let mut group = c.benchmark_group(format!("plan {what}"));
        for (who, engine, identity) in [
            ("open mesh", &open, &anyone),
            ("governed, admin", &governed, &admin),
            ("governed, filters+masks", &governed, &analyst),
        ] {
            // Each must plan (and, once, run) or the comparison means nothing.
            rt.block_on(async {
                let planned = engine.session(identity).plan(sql).await.expect(sql);
                let stream = planned.execute().await.expect(sql);
                futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                    .await
                    .expect(sql);
            });
            group.bench_function(who, |b| {
                b.iter(|| rt.block_on(async { engine.session(identity).plan(sql).await.unwrap() }))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
