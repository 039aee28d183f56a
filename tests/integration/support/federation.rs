//! The federation test mesh (tests/fixtures/federation): a real PostgreSQL cluster
//! holding customer and orders, a second `meshql serve` node serving nation and region,
//! a Delta lineitem, and Parquet copies of every remote table for differential tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use meshql_engine::{EngineOptions, Identity, MeshEngine};
use meshql_tpch::generate::{Table, batches};
use meshql_tpch::write;

use super::fixture::{TEST_SF, copy_dir};
use super::pg::{PG_PASSWORD, PgCluster};
use super::server::Server;
use super::slt::TEST_PASSWORD;

/// Password of the node's users (`gateway`, `geo_admin`).
pub(crate) const NODE_PASSWORD: &str = "node test:pw";
/// What the gateway signs its users' names with, and the node trusts.
pub(crate) const DELEGATION_SECRET: &str = "delegation test secret";

pub(crate) struct Federation {
    pub pg: PgCluster,
    pub node: Option<Server>,
    pub mesh: PathBuf,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Federation {
    /// A whole fixture of its own: PostgreSQL, data and the node. Fault tests use one
    /// each, since they stop its parts.
    pub(crate) async fn build() -> Federation {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/federation"),
            &root,
        );
        let data = root.join("data");
        std::fs::create_dir_all(&data).expect("mkdir");

        let pg = PgCluster::start();
        pg.psql("postgres", "CREATE DATABASE crm");
        // The TPC-H mesh layout's customer and orders tables.
        pg.psql("crm", meshql_tpch::layout::MESH_PG_SCHEMA);
        load(&pg, "customer", Table::Customer, dir.path());
        load(&pg, "orders", Table::Orders, dir.path());
        pg.psql("crm", TYPE_ZOO);
        // Row counts for the planner (pg_class.reltuples), as autovacuum would make them.
        pg.psql("crm", "ANALYZE");

        for (name, table) in [
            ("customer", Table::Customer),
            ("orders", Table::Orders),
            ("nation", Table::Nation),
            ("region", Table::Region),
        ] {
            write::parquet(
                &data.join(format!("{name}.parquet")),
                batches(table, TEST_SF),
            )
            .expect("parquet copy");
        }
        write::delta_dir(
            &data.join("lineitem"),
            batches(Table::LineItem, TEST_SF).collect(),
        )
        .await
        .expect("lineitem");

        let mut federation = Federation {
            pg,
            node: None,
            mesh: root.join("mesh.yaml"),
            root,
            _dir: dir,
        };
        federation.start_node();
        federation
    }

    /// (Re)start the geo node on a fresh port.
    pub(crate) fn start_node(&mut self) {
        let env = vec![
            (
                "MESHQL_TEST_NODE_PASSWORD".to_string(),
                NODE_PASSWORD.to_string(),
            ),
            (
                "MESHQL_TEST_DELEGATION_SECRET".to_string(),
                DELEGATION_SECRET.to_string(),
            ),
        ];
        self.node = Some(Server::start(&self.root.join("node/mesh.yaml"), &env, &[]));
    }

    pub(crate) fn node_url(&self) -> String {
        self.node
            .as_ref()
            .map(|n| n.url.clone())
            .unwrap_or_default()
    }

    /// Environment the gateway mesh reads.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MESHQL_TEST_PG_PORT".into(), self.pg.port.to_string()),
            ("MESHQL_TEST_PG_PASSWORD".into(), PG_PASSWORD.into()),
            ("MESHQL_TEST_NODE_URL".into(), self.node_url()),
            ("MESHQL_TEST_NODE_PASSWORD".into(), NODE_PASSWORD.into()),
            (
                "MESHQL_TEST_DELEGATION_SECRET".into(),
                DELEGATION_SECRET.into(),
            ),
            ("MESHQL_TEST_PASSWORD".into(), TEST_PASSWORD.into()),
        ]
    }

    /// An embedded gateway engine over this fixture.
    pub(crate) async fn engine(&self, subplan_pushdown: bool) -> MeshEngine {
        let env = self.env();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let spec = meshql_engine::config::load_mesh_with_env(&self.mesh, &lookup)
            .expect("federation mesh loads");
        let options = EngineOptions {
            no_subplan_pushdown: !subplan_pushdown,
            ..Default::default()
        };
        MeshEngine::from_spec_with(spec, &meshql_connectors::default_connectors(), &options).await
    }
}

/// The shared fixture (never stopped), built on first use.
pub(crate) fn federation() -> &'static Federation {
    static FEDERATION: OnceLock<Federation> = OnceLock::new();
    FEDERATION.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(Federation::build())
        })
        .join()
        .expect("federation fixture builds")
    })
}

/// The platform admin of the gateway mesh.
pub(crate) fn root() -> Identity {
    Identity::new("root", vec!["platform".to_string()])
}

/// An analyst: customer rows of nation 3 only, phones masked.
pub(crate) fn analyst() -> Identity {
    Identity::new("ana", vec!["analysts".to_string()])
}

/// Shared engines over the shared fixture, with subplan pushdown on and off.
pub(crate) async fn engines() -> (Arc<MeshEngine>, Arc<MeshEngine>) {
    let f = federation();
    (
        Arc::new(f.engine(true).await),
        Arc::new(f.engine(false).await),
    )
}

/// One row of every mapped type, and one column of a type that has no mapping.
const TYPE_ZOO: &str = "
CREATE TABLE type_zoo (
  id integer PRIMARY KEY, amount numeric(12,3), happened timestamptz, local_time timestamp,
  tags text[], doc json, flag boolean, ratio double precision, small smallint);
INSERT INTO type_zoo VALUES
  (1, 12345.678, '2024-03-01 12:00:00+02', '2024-03-01 12:00:00', ARRAY['a','b'],
   '{\"k\": 1}', true, 0.5, 7),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, -0.005, '1969-07-20 20:17:40.000001+00', '1899-12-31 23:59:59.999999', ARRAY[]::text[],
   '\"é\"', false, -1.5e300, -32768);
CREATE TABLE odd_types (id integer, span daterange);
CREATE TABLE evolving (id integer);
INSERT INTO evolving VALUES (1), (2);";

/// Generate `table` as CSV and `\copy` it into crm.
fn load(pg: &PgCluster, name: &str, table: Table, scratch: &Path) {
    let path = scratch.join(format!("{name}.csv"));
    let file = std::fs::File::create(&path).expect("csv");
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    let all: Vec<RecordBatch> = batches(table, TEST_SF).collect();
    for batch in &all {
        writer.write(batch).expect("csv row");
    }
    drop(writer);
    pg.psql(
        "crm",
        &format!(
            "\\copy {name} FROM '{}' WITH (FORMAT csv, HEADER true)",
            path.display()
        ),
    );
}
