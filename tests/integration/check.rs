//! `meshql check` on good and bad meshes: every problem is reported as
//! FILE:LINE:COL with the port or source it concerns and a fix, exit code 1.

use std::path::Path;

use crate::support::cli::{meshql_plain, stderr, stdout};

/// A mesh directory with `files` (path, content) plus a small local data set.
fn mesh_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let write = |path: &str, content: &str| {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    };
    write("data/people.csv", "id,name\n1,ada\n2,grace\n");
    write(
        "data/events.json",
        "{\"id\":1,\"kind\":\"hire\"}\n{\"id\":2,\"kind\":\"leave\"}\n",
    );
    write("data/plain/people.csv", "id,name\n3,alan\n");
    let ragged: String = std::iter::once("id,name\n".to_string())
        .chain((0..50).map(|i| format!("{i},n{i}\n")))
        .chain(std::iter::once("51,too,many,fields\n".to_string()))
        .collect();
    write("data/ragged.csv", &ragged);
    for (path, content) in files {
        write(path, content);
    }
    dir
}

fn check(dir: &Path) -> (bool, String, String) {
    let out = meshql_plain(&["check", "--config", "mesh.yaml"], Some(dir));
    (out.status.success(), stdout(&out), stderr(&out))
}

const HEAD: &str = "version: 1\nsources:\n  lake: { kind: local, root: ./data }\n";

/// Asserts that check fails and reports `needles` on one line starting `mesh.yaml:LINE:`.
fn assert_problem(dir: &Path, file: &str, line: usize, needles: &[&str]) {
    let (ok, out, err) = check(dir);
    assert!(!ok, "check passed but should fail:\n{out}\n{err}");
    let prefix = format!("{file}:{line}:");
    let hit = out
        .lines()
        .find(|l| l.starts_with(&prefix) && needles.iter().all(|n| l.contains(n)));
    assert!(
        hit.is_some(),
        "no line `{prefix}...` containing {needles:?} in:\n{out}\n{err}"
    );
}

#[test]
fn a_good_mesh_passes_with_one_summary_line() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    owner: team-hr\n    products:\n      staff:\n        output_ports:\n          \
             people: {{ source: lake, format: csv, path: people.csv }}\n          \
             events: {{ source: lake, format: json, path: events.json }}\n          \
             hires: {{ sql: \"SELECT id FROM hr.staff.events WHERE kind = 'hire'\" }}\n"
        ),
    )]);
    let (ok, out, err) = check(dir.path());
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        "mesh ok: 1 domains, 1 data products, 3 output ports (2 source, 1 derived), 1 sources"
    );
}

#[test]
fn broken_yaml_points_at_the_line() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!("{HEAD}domains:\n  hr:\n    products: [\n"),
    )]);
    let (ok, out, _) = check(dir.path());
    assert!(!ok);
    // The unclosed `[` is reported where the parser gave up: the end of the file.
    assert!(out.starts_with("mesh.yaml:7:"), "{out}");
    assert!(out.contains("invalid YAML"), "{out}");
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!("{HEAD}domains:\n  hr:\n    ownr: team-hr\n"),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        6,
        &["domain `hr`", "unknown key `ownr`", "did you mean `owner`?"],
    );
}

#[test]
fn unknown_key_in_a_port_and_in_its_options() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          people:\n            \
             source: lake\n            format: csv\n            pth: people.csv\n          \
             other:\n            source: lake\n            format: csv\n            path: people.csv\n            \
             options: {{ heade: true }}\n"
        ),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        12,
        &["hr.staff.people", "unknown key `pth`", "`path`"],
    );
    assert_problem(
        dir.path(),
        "mesh.yaml",
        17,
        &["hr.staff.other", "unknown key `heade`", "`header`"],
    );
}

#[test]
fn missing_path_names_port_source_and_fix() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          people:\n            \
             source: lake\n            format: parquet\n            path: nowhere/people.parquet\n"
        ),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        12,
        &[
            "output port `hr.staff.people`",
            "`nowhere/people.parquet` does not exist in source `lake`",
            "help:",
        ],
    );
}

#[test]
fn a_directory_that_is_not_a_delta_table() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          people:\n            \
             source: lake\n            format: delta\n            path: plain\n"
        ),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        12,
        &["hr.staff.people", "is not a Delta table", "format: parquet"],
    );
}

#[test]
fn a_csv_with_ragged_rows() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          people:\n            \
             source: lake\n            format: csv\n            path: ragged.csv\n"
        ),
    )]);
    let (ok, out, err) = check(dir.path());
    assert!(!ok, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("hr.staff.people"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("mesh.yaml:9:"), "{line}");
    // Found while inferring the schema, with arrow's own words.
    assert!(line.contains("unequal lengths"), "{line}");
}

#[test]
fn colliding_names() {
    // The same port twice in one product.
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
             people: {{ source: lake, format: csv, path: people.csv }}\n          \
             people: {{ source: lake, format: csv, path: people.csv }}\n"
        ),
    )]);
    let (ok, out, _) = check(dir.path());
    assert!(!ok);
    assert!(out.starts_with("mesh.yaml:10:"), "{out}");
    assert!(
        out.contains("`people` is declared twice") && out.contains("first at line 9"),
        "{out}"
    );

    // The same domain in two files: both files are named.
    let dir = mesh_dir(&[
        ("mesh.yaml", &format!("{HEAD}include: [domains/*.yaml]\n")),
        ("domains/a.yaml", "domains:\n  hr:\n    owner: a\n"),
        ("domains/b.yaml", "domains:\n  hr:\n    owner: b\n"),
    ]);
    let (ok, out, _) = check(dir.path());
    assert!(!ok);
    let line = out
        .lines()
        .find(|l| l.contains("declared twice"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("domains/a.yaml:2:3") && line.contains("domains/b.yaml:2:3"),
        "{line}"
    );

    // A name that SQL would fold to another one.
    let dir = mesh_dir(&[("mesh.yaml", &format!("{HEAD}domains:\n  HR: {{}}\n"))]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        5,
        &["invalid domain name `HR`", "lowercase"],
    );
}

#[test]
fn an_included_file_may_only_add_domains_and_sources() {
    let dir = mesh_dir(&[
        ("mesh.yaml", &format!("{HEAD}include: [domains/*.yaml]\n")),
        ("domains/a.yaml", "version: 1\ndomains: {}\n"),
    ]);
    assert_problem(
        dir.path(),
        "domains/a.yaml",
        1,
        &["unknown key `version`", "only declare"],
    );
}

#[test]
fn derived_ports_with_bad_sql_or_a_cycle() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
             people: {{ source: lake, format: csv, path: people.csv }}\n          \
             bad: {{ sql: \"SELEC id FROM hr.staff.people\" }}\n          \
             a: {{ sql: \"SELECT * FROM hr.staff.b\" }}\n          \
             b: {{ sql: \"SELECT * FROM hr.staff.a\" }}\n          \
             missing: {{ sql: \"SELECT * FROM hr.staff.nope\" }}\n"
        ),
    )]);
    let (ok, out, _) = check(dir.path());
    assert!(!ok);
    assert!(
        out.lines().any(|l| l.starts_with("mesh.yaml:10:")
            && l.contains("hr.staff.bad")
            && l.contains("invalid SQL")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("mesh.yaml:11:")
            && l.contains("cycle")
            && l.contains("hr.staff.a -> hr.staff.b -> hr.staff.a")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("mesh.yaml:13:")
            && l.contains("hr.staff.missing")
            && l.contains("nope")),
        "{out}"
    );
    assert!(
        !out.contains("hr.staff.people"),
        "the good port has no problem:\n{out}"
    );
}

#[test]
fn include_glob_that_matches_nothing() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!("{HEAD}include:\n  - domains/*.yaml\n"),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        5,
        &["`domains/*.yaml` matches no file", "help:"],
    );
}

#[test]
fn unknown_source_missing_variable_and_unknown_kind() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        "version: 1\nsources:\n  lake: { kind: local, root: ./data }\n  vault: { kind: s4, bucket: x }\n  \
         secret: { kind: s3, bucket: x, secret_access_key: \"${env:MESHQL_SURELY_UNSET}\" }\n\
         domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
         people: { source: laek, format: csv, path: people.csv }\n",
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        11,
        &[
            "hr.staff.people",
            "unknown source `laek`",
            "did you mean `lake`?",
        ],
    );
    assert_problem(
        dir.path(),
        "mesh.yaml",
        4,
        &["source `vault`", "unknown source kind `s4`", "`s3`"],
    );
    assert_problem(
        dir.path(),
        "mesh.yaml",
        5,
        &["source `secret`", "`MESHQL_SURELY_UNSET` is not set"],
    );
}

#[test]
fn documented_columns_must_exist() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          people:\n            \
             source: lake\n            format: csv\n            path: people.csv\n            columns:\n              \
             nmae: {{ description: Full name }}\n"
        ),
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        14,
        &["hr.staff.people", "column `nmae`", "did you mean `name`?"],
    );
}

#[test]
fn a_source_that_is_down_fails_its_ports_fast_and_only_them() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        "version: 1\nsources:\n  lake: { kind: local, root: ./data }\n  \
         down: { kind: s3, bucket: b, endpoint: \"http://127.0.0.1:1\", allow_http: true, access_key_id: k, secret_access_key: s }\n\
         domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
         people: { source: lake, format: csv, path: people.csv }\n          \
         remote: { source: down, format: parquet, path: people.parquet }\n",
    )]);
    assert_problem(
        dir.path(),
        "mesh.yaml",
        11,
        &[
            "hr.staff.remote",
            "cannot reach source `down`",
            "127.0.0.1:1",
            "help:",
        ],
    );
    let (_, out, _) = check(dir.path());
    assert_eq!(
        out.lines().count(),
        1,
        "only the port on the down source fails:\n{out}"
    );

    // The other port still answers, with a warning naming the unavailable one.
    let out = meshql_plain(
        &[
            "query",
            "--config",
            "mesh.yaml",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM hr.staff.people",
        ],
        Some(dir.path()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "n\n2\n");
    assert!(stderr(&out).contains("hr.staff.remote"), "{}", stderr(&out));
}

#[test]
fn a_path_may_not_leave_its_source_root() {
    let dir = mesh_dir(&[(
        "mesh.yaml",
        &format!(
            "{HEAD}domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
             dots: {{ source: lake, format: csv, path: ../secret.csv }}\n          \
             encoded: {{ source: lake, format: csv, path: \"%2e%2e/secret.csv\" }}\n"
        ),
    )]);
    std::fs::write(dir.path().join("secret.csv"), "a\n1\n").expect("write");
    assert_problem(
        dir.path(),
        "mesh.yaml",
        9,
        &["hr.staff.dots", "stay inside"],
    );
    assert_problem(
        dir.path(),
        "mesh.yaml",
        10,
        &["hr.staff.encoded", "stay inside"],
    );
}

#[test]
fn secrets_never_reach_output_or_metadata() {
    const SECRET: &str = "sup3r-s3cret-v4lue";
    let dir = mesh_dir(&[(
        "mesh.yaml",
        "version: 1\nsources:\n  lake: { kind: local, root: ./data }\n  \
         down: { kind: s3, bucket: b, endpoint: \"http://127.0.0.1:1\", allow_http: true, access_key_id: k, \
         secret_access_key: \"${env:MESHQL_TEST_SECRET}\" }\n\
         domains:\n  hr:\n    products:\n      staff:\n        output_ports:\n          \
         remote: { source: down, format: parquet, path: p.parquet }\n",
    )]);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshql"))
            .args(args)
            .current_dir(dir.path())
            .env("MESHQL_TEST_SECRET", SECRET)
            .env("MESHQL_LOG", "debug")
            .output()
            .expect("run")
    };
    for out in [
        run(&["check", "--config", "mesh.yaml"]),
        run(&[
            "query",
            "--config",
            "mesh.yaml",
            "--format",
            "csv",
            "SELECT * FROM mesh.meta.sources",
        ]),
        run(&[
            "query",
            "--config",
            "mesh.yaml",
            "SELECT * FROM hr.staff.remote",
        ]),
    ] {
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(SECRET), "secret leaked:\n{all}");
    }
}

#[test]
fn the_demo_never_replaces_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("precious.txt"), "keep me").expect("write");
    let out = meshql_plain(
        &[
            "check",
            "--demo",
            "--data-dir",
            dir.path().to_str().expect("utf8"),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a meshql demo directory"),
        "{}",
        stderr(&out)
    );
    assert!(
        dir.path().join("precious.txt").exists(),
        "the user's file was deleted"
    );
}
