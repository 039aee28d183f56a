//! The test mesh (tests/fixtures/mesh) with its data: generated once per test run into
//! a temp dir, the S3 part uploaded to the S3-compatible server the test command starts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{RecordBatch, StringArray};
use arrow::compute::kernels::cmp::eq;
use arrow::compute::{concat_batches, filter_record_batch};
use deltalake::protocol::SaveMode;
use meshql_engine::MeshEngine;
use meshql_tpch::generate::{Table, batches};
use meshql_tpch::write;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::s3::S3Server;

/// Scale factor of the test data: 1500 customers, 15000 orders, ~60000 order lines.
pub(crate) const TEST_SF: f64 = 0.01;

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    /// The main mesh file.
    pub mesh: PathBuf,
    pub root: PathBuf,
    pub s3: S3Server,
    pub bucket: String,
}

impl Fixture {
    /// Environment the test mesh reads (`${env:...}`).
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = self.s3.env();
        env.push(("MESHQL_TEST_BUCKET".into(), self.bucket.clone()));
        env
    }

    pub(crate) fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| {
            self.env()
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
        }
    }

    /// A fresh engine over the test mesh.
    pub(crate) async fn engine(&self) -> MeshEngine {
        self.engine_with(&Default::default()).await
    }

    pub(crate) async fn engine_with(&self, options: &meshql_engine::EngineOptions) -> MeshEngine {
        let spec = meshql_engine::config::load_mesh_with_env(&self.mesh, &self.lookup())
            .expect("test mesh loads");
        MeshEngine::from_spec_with(spec, &meshql_connectors::default_connectors(), options).await
    }
}

/// The shared fixture, built on first use.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Build on a runtime of its own: test runtimes come and go.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(build())
        })
        .join()
        .expect("fixture builds")
    })
}

async fn build() -> Fixture {
    let s3 = S3Server::from_env();
    let bucket = format!("meshql-test-{}", std::process::id());
    s3.create_bucket(&bucket).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mesh"),
        &root,
    );
    let data = root.join("data");

    // sales.orders.orders: Delta with two versions (first batch, then the rest).
    let mut orders = batches(Table::Orders, TEST_SF);
    let first = orders.next().expect("orders");
    let orders_url = dir_url(&data.join("sales/orders"));
    write::delta(orders_url.clone(), vec![first], &[], SaveMode::Overwrite)
        .await
        .expect("orders v0");
    write::delta(orders_url, orders.collect(), &[], SaveMode::Append)
        .await
        .expect("orders v1");

    // sales.orders.lineitem: hive-partitioned Parquet, l_returnflag=A|N|R.
    let lineitem: Vec<RecordBatch> = batches(Table::LineItem, TEST_SF).collect();
    let lineitem = concat_batches(&lineitem[0].schema(), &lineitem).expect("concat");
    let flag_idx = lineitem
        .schema()
        .index_of("l_returnflag")
        .expect("l_returnflag");
    for flag in ["A", "N", "R"] {
        let mask = eq(lineitem.column(flag_idx), &StringArray::new_scalar(flag)).expect("mask");
        let mut part = filter_record_batch(&lineitem, &mask).expect("filter");
        part.remove_column(flag_idx);
        write::parquet(
            &data.join(format!("sales/lineitem/l_returnflag={flag}/part-0.parquet")),
            [part],
        )
        .expect("lineitem");
    }

    // customer.geo: nation as `|`-delimited CSV, region as JSON lines.
    let nation_path = data.join("customer/nation.csv");
    std::fs::create_dir_all(nation_path.parent().expect("parent")).expect("mkdir");
    let mut writer = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .with_delimiter(b'|')
        .build(std::fs::File::create(&nation_path).expect("nation.csv"));
    for batch in batches(Table::Nation, TEST_SF) {
        writer.write(&batch).expect("nation");
    }
    write::json(
        &data.join("customer/region.json"),
        batches(Table::Region, TEST_SF),
    )
    .expect("region");

    // supply.catalog.partsupp: two Parquet files matched by a glob.
    let partsupp: Vec<RecordBatch> = batches(Table::PartSupp, TEST_SF).collect();
    let half = partsupp.len() / 2;
    write::parquet(
        &data.join("supply/partsupp/part-0.parquet"),
        partsupp[..half].to_vec(),
    )
    .expect("partsupp");
    write::parquet(
        &data.join("supply/partsupp/part-1.parquet"),
        partsupp[half..].to_vec(),
    )
    .expect("partsupp");

    // S3: customer (Parquet), part (Delta, written locally then uploaded), supplier (2 CSVs).
    let staging = tempfile::tempdir().expect("staging");
    let st = staging.path();
    write::parquet(
        &st.join("customer/customer.parquet"),
        batches(Table::Customer, TEST_SF),
    )
    .expect("customer");
    write::delta(
        dir_url(&st.join("supply/part")),
        batches(Table::Part, TEST_SF).collect(),
        &[],
        SaveMode::Overwrite,
    )
    .await
    .expect("part");
    let supplier: Vec<RecordBatch> = batches(Table::Supplier, TEST_SF).collect();
    let supplier = concat_batches(&supplier[0].schema(), &supplier).expect("concat");
    let n = supplier.num_rows();
    write::csv(
        &st.join("supply/supplier-0.csv"),
        [supplier.slice(0, n / 2)],
    )
    .expect("supplier");
    write::csv(
        &st.join("supply/supplier-1.csv"),
        [supplier.slice(n / 2, n - n / 2)],
    )
    .expect("supplier");
    s3.upload_dir(&bucket, st).await;

    Fixture {
        mesh: root.join("mesh.yaml"),
        root,
        _dir: dir,
        s3,
        bucket,
    }
}

fn dir_url(path: &Path) -> Url {
    std::fs::create_dir_all(path).expect("mkdir");
    Url::from_directory_path(path).expect("absolute")
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// An S3 client for the test server.
pub(crate) fn s3_store(s3: &S3Server, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(&s3.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(&s3.key)
            .with_secret_access_key(&s3.secret)
            .build()
            .expect("s3 client"),
    )
}

pub(crate) async fn put(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) {
    store
        .put(&ObjectPath::from(path), bytes.into())
        .await
        .unwrap_or_else(|e| panic!("upload {path}: {e}"));
}
