//! Flight SQL through a real `meshql serve` process and arrow-flight's client: the
//! statement and prepared-statement paths, metadata, sign-in and error codes.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use futures::TryStreamExt;
use tonic::transport::Channel;

use crate::support::fixture::{copy_dir, fixture};
use crate::support::server::Server;

/// Every batch of every endpoint; asserts each stream's schema equals the FlightInfo's.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let expected = info.clone().try_decode_schema().expect("FlightInfo schema");
    assert_eq!(info.endpoint.len(), 1, "one endpoint");
    assert!(
        info.endpoint[0].location.is_empty(),
        "empty location = this server"
    );
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let mut stream = client.do_get(ticket).await.expect("do_get");
        while let Some(batch) = stream.try_next().await.expect("batch") {
            assert_eq!(
                batch.schema().as_ref(),
                &expected,
                "DoGet schema differs from FlightInfo schema"
            );
            out.push(batch);
        }
    }
    out
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// A copy of the test mesh with an `access:` section appended.
fn mesh_with_access(access: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    copy_dir(&fixture().root, dir.path());
    let mesh = dir.path().join("mesh.yaml");
    let text = std::fs::read_to_string(&mesh).expect("mesh");
    std::fs::write(&mesh, format!("{text}{access}")).expect("write");
    (dir, mesh)
}

fn open_server() -> Server {
    let f = fixture();
    Server::start(&f.mesh, &f.env(), &[])
}

#[tokio::test]
async fn statements_stream_results_with_client_readable_types() {
    let server = open_server();
    let mut client = server.client().await;
    let info = client
        .execute(
            "SELECT c.c_name, n.n_name, o.o_totalprice FROM sales.orders.orders o \
             JOIN customer.profile.customer c ON o.o_custkey = c.c_custkey \
             JOIN customer.geo.nation n ON c.c_nationkey = n.n_nationkey \
             ORDER BY o.o_orderkey LIMIT 5"
                .to_string(),
            None,
        )
        .await
        .expect("execute");
    let schema = info.clone().try_decode_schema().expect("schema");
    // Strings go out as Utf8 (not Utf8View), so every client can read them.
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    let batches = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 5);

    // A large result streams in many batches.
    let info = client
        .execute("SELECT * FROM sales.orders.lineitem".into(), None)
        .await
        .expect("execute");
    let batches = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 60175);
    assert!(batches.len() > 1, "streamed batch by batch");
}

#[tokio::test]
async fn prepared_statements_with_question_mark_parameters() {
    let server = open_server();
    let mut client = server.client().await;
    let mut prepared = client
        .prepare(
            "SELECT n_name FROM customer.geo.nation WHERE n_nationkey = ? OR n_name = ? ORDER BY n_name".into(),
            None,
        )
        .await
        .expect("prepare");
    let params = prepared
        .parameter_schema()
        .expect("parameter schema")
        .clone();
    assert_eq!(params.fields().len(), 2, "{params:?}");
    assert_eq!(params.field(0).name(), "$1");
    assert_eq!(params.field(0).data_type(), &DataType::Int64);
    assert_eq!(params.field(1).data_type(), &DataType::Utf8);
    let binding = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![0])),
            Arc::new(arrow::array::StringArray::from(vec!["PERU"])),
        ],
    )
    .expect("batch");
    prepared.set_parameters(binding).expect("bind");
    let info = prepared.execute().await.expect("execute");
    let batches = fetch(&mut client, info).await;
    let names: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, vec!["ALGERIA", "PERU"]);
    prepared.close().await.expect("close");
}

#[tokio::test]
async fn metadata_lists_domains_products_and_ports_with_remarks() {
    let server = open_server();
    let mut client = server.client().await;

    let info = client.get_catalogs().await.expect("catalogs");
    let catalogs: Vec<String> = fetch(&mut client, info)
        .await
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(catalogs, vec!["customer", "mesh", "sales", "supply"]);

    // Only a schema pattern, no catalog: as ADBC's get_objects asks.
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("pro%".into()),
        })
        .await
        .expect("schemas");
    let batches = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1, "customer.profile");

    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("customer".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .expect("tables");
    let batches = fetch(&mut client, info).await;
    assert_eq!(rows(&batches), 1);
    let batch = &batches[0];
    assert_eq!(batch.column(0).as_string::<i32>().value(0), "customer");
    assert_eq!(batch.column(1).as_string::<i32>().value(0), "profile");
    let schema_bytes = batch.column(4).as_binary::<i32>().value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes).expect("schema");
    let phone = schema.field_with_name("c_phone").expect("c_phone");
    assert_eq!(
        phone
            .metadata()
            .get("ARROW:FLIGHT:SQL:REMARKS")
            .map(String::as_str),
        Some("Phone")
    );

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::SqlIdentifierQuoteChar,
        ])
        .await
        .expect("sql info");
    assert_eq!(rows(&fetch(&mut client, info).await), 2);
    let info = client.get_table_types().await.expect("table types");
    assert_eq!(rows(&fetch(&mut client, info).await), 2);
}

#[tokio::test]
async fn errors_carry_the_engine_message_and_a_fitting_code() {
    let server = open_server();
    let mut client = server.client().await;
    for (sql, code) in [
        ("SELEC 1", tonic::Code::InvalidArgument),
        ("SELECT * FROM sales.orders.nope", tonic::Code::NotFound),
        (
            "SELECT nope FROM sales.orders.orders",
            tonic::Code::InvalidArgument,
        ),
        ("CREATE TABLE t (a INT)", tonic::Code::InvalidArgument),
    ] {
        let err = client.execute(sql.into(), None).await.expect_err(sql);
        let status = match err {
            arrow_flight::error::FlightError::Tonic(status) => *status,
            other => panic!("{sql}: not a gRPC status: {other}"),
        };
        assert_eq!(status.code(), code, "{sql}: {}", status.message());
        assert!(
            !status.message().contains("DataFusionError"),
            "{sql}: {}",
            status.message()
        );
    }
    let err = client
        .execute_update("DELETE FROM sales.orders.orders".into(), None)
        .await
        .expect_err("update");
    assert!(err.to_string().contains("read-only"), "{err}");

    // A request whose command does not decode (a statement that is not UTF-8) is the
    // client's error: INVALID_ARGUMENT, not arrow-flight's INTERNAL.
    let command = |type_name: &str| {
        // Field 1 (the SQL text, length-delimited) holding bytes that are not UTF-8.
        let sql = [b"SELECT '".as_slice(), &[0xff], b"'"].concat();
        let mut value = vec![0x0a, sql.len() as u8];
        value.extend(sql);
        prost::Message::encode_to_vec(&arrow_flight::sql::Any {
            type_url: format!("type.googleapis.com/arrow.flight.protocol.sql.{type_name}"),
            value: value.into(),
        })
    };
    let statuses = [
        client
            .do_get(arrow_flight::Ticket::new(command("CommandStatementQuery")))
            .await
            .map(|_| ())
            .expect_err("do_get"),
        client
            .do_action(arrow_flight::Action::new(
                "CreatePreparedStatement",
                command("ActionCreatePreparedStatementRequest"),
            ))
            .await
            .map(|_| ())
            .expect_err("do_action"),
    ];
    for err in statuses {
        let arrow_flight::error::FlightError::Tonic(status) = err else {
            panic!("not a gRPC status: {err}");
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(status.message().contains("UTF-8"), "{status}");
    }

    // CancelFlightInfo is harmless: nothing runs before DoGet.
    let info = client
        .execute("SELECT 1".into(), None)
        .await
        .expect("execute");
    let request = arrow_flight::CancelFlightInfoRequest::new(info);
    let action =
        arrow_flight::Action::new("CancelFlightInfo", prost::Message::encode_to_vec(&request));
    let mut results = client.do_action(action).await.expect("cancel");
    let result = results
        .try_next()
        .await
        .expect("result")
        .expect("one result");
    let result: arrow_flight::CancelFlightInfoResult =
        prost::Message::decode(result.body).expect("decode");
    assert_eq!(result.status(), arrow_flight::CancelStatus::Cancelled);
}

/// Codes come from the engine's typed errors: a port whose data is gone is UNAVAILABLE
/// (a client may retry), a port a user may not read is NOT_FOUND exactly like one that
/// does not exist.
#[tokio::test]
async fn unavailable_ports_and_hidden_ports_have_their_own_codes() {
    let (dir, mesh) = mesh_with_access(
        "access:\n  users:\n    u: { password: \"${env:MESHQL_TEST_PASSWORD}\" }\n  rules:\n    \
         - { principals: [user:u], allow: [\"supply.*.*\"] }\n",
    );
    std::fs::remove_dir_all(dir.path().join("data/supply/partsupp")).expect("rm");
    let mut env = fixture().env();
    env.push(("MESHQL_TEST_PASSWORD".into(), "pw".into()));
    let server = Server::start(&mesh, &env, &[]);
    let mut client = server.client().await;
    client.handshake("u", "pw").await.expect("sign in");
    let mut fail = async |sql: &str| match client.execute(sql.into(), None).await {
        Err(arrow_flight::error::FlightError::Tonic(status)) => *status,
        other => panic!("{sql}: {other:?}"),
    };
    let down = fail("SELECT * FROM supply.catalog.partsupp").await;
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down}");
    assert!(
        down.message()
            .contains("output port `supply.catalog.partsupp` is unavailable"),
        "{down}"
    );
    let hidden = fail("SELECT * FROM sales.orders.orders").await;
    let missing = fail("SELECT * FROM sales.orders.ordersx").await;
    assert_eq!(hidden.code(), tonic::Code::NotFound, "{hidden}");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    assert_eq!(
        hidden.message().replace("orders.orders", "orders.ordersx"),
        missing.message()
    );
}

/// DoGet errors: a bad ticket gets a status before any data, and an error after rows
/// were sent reaches the client in the trailers, with its code and message, after the
/// rows that came before it.
#[tokio::test]
async fn do_get_errors_reach_the_client_before_and_mid_stream() {
    let server = open_server();
    let mut client = server.client().await;
    let err = match client
        .do_get(arrow_flight::Ticket::new("not a ticket"))
        .await
    {
        Ok(stream) => stream
            .try_collect::<Vec<_>>()
            .await
            .expect_err("a bad ticket"),
        Err(err) => err,
    };
    let arrow_flight::error::FlightError::Tonic(status) = err else {
        panic!("not a gRPC status: {err}");
    };
    assert_ne!(status.code(), tonic::Code::Ok);
    assert!(!status.message().is_empty());

    // Division by zero at row 50,000, in the 7th batch of 8192 rows: batches go out first.
    let sql = "SELECT 1 / (value - 50000) AS x FROM generate_series(1, 100000)";
    let info = client.execute(sql.into(), None).await.expect("execute");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("do_get");
    let mut received = 0;
    let status = loop {
        match stream.try_next().await {
            Ok(Some(batch)) => received += batch.num_rows(),
            Ok(None) => panic!("the stream ended without the error after {received} rows"),
            Err(arrow_flight::error::FlightError::Tonic(status)) => break *status,
            Err(other) => panic!("not a gRPC status: {other}"),
        }
    };
    // Which batches beat the error depends on the partitions; the failing one never arrives.
    assert!(
        received > 0 && received < 100_000,
        "{received} rows before the error"
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("Divide by zero"), "{status}");

    // The connection still serves the next statement.
    let info = client
        .execute("SELECT 1".into(), None)
        .await
        .expect("execute");
    assert_eq!(rows(&fetch(&mut client, info).await), 1);
}

#[tokio::test]
async fn sign_in_with_password_then_bearer_token() {
    let f = fixture();
    let (_dir, mesh) = mesh_with_access(
        "access:\n  users:\n    alice: { password: \"${env:ALICE_PASSWORD}\", groups: [analysts] }\n    \
         etl: { password_sha256: \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }\n\
         \x20 rules:\n    - { principals: [\"*\"], allow: [\"*\"] }\n",
    );
    let mut env = f.env();
    env.push(("ALICE_PASSWORD".into(), "wonder land:1".into()));
    let server = Server::start(&mesh, &env, &[]);

    // No credentials: refused.
    let mut anonymous = server.client().await;
    let err = anonymous
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("no token");
    assert!(
        err.to_string().contains("Unauthenticated") || err.to_string().contains("credentials"),
        "{err}"
    );
    // Wrong password: refused.
    let mut wrong = server.client().await;
    assert!(wrong.handshake("alice", "nope").await.is_err());
    // Right password (with a colon and a space), then the bearer token on every call.
    let mut alice = server.client().await;
    alice
        .handshake("alice", "wonder land:1")
        .await
        .expect("handshake");
    assert!(alice.token().is_some());
    let info = alice
        .execute("SELECT count(*) FROM customer.geo.region".into(), None)
        .await
        .expect("query");
    assert_eq!(rows(&fetch(&mut alice, info).await), 1);
    // A user configured by the digest of "test".
    let mut etl = server.client().await;
    etl.handshake("etl", "test").await.expect("digest user");
    // A forged token: refused.
    let mut forged = server.client().await;
    forged.set_token("YWxpY2UKOTk5OTk5OTk5OTk.AAAA".into());
    assert!(forged.execute("SELECT 1".into(), None).await.is_err());
}

#[test]
fn open_mode_only_on_loopback() {
    let f = fixture();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshql"));
    cmd.args(["serve", "--config"])
        .arg(&f.mesh)
        .args(["--bind", "0.0.0.0:0"]);
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve without sign-in on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("--insecure-open"), "{err}");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let server = open_server();
    let mut client = server.client().await;
    let info = client
        .execute("SELECT 1".into(), None)
        .await
        .expect("execute");
    assert_eq!(rows(&fetch(&mut client, info).await), 1);
    drop(client);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .expect("join");
    assert!(status.success(), "{status}");
}

/// The Arrow Flight SQL JDBC driver's call pattern (its jar is not in any registry we can
/// reach, so the pattern is replayed here): sign in with a token via Handshake, prepare
/// every statement, read all SqlInfo once with typed accessors, call the key commands.
#[tokio::test]
async fn jdbc_driver_call_pattern() {
    use arrow::array::{Array, UnionArray};
    use arrow_flight::HandshakeRequest;
    use arrow_flight::sql::CommandGetPrimaryKeys;

    let f = fixture();
    let (_dir, mesh) = mesh_with_access(
        "access:\n  users:\n    bi: { password: tableau }\n  rules:\n    - { principals: [\"*\"], allow: [\"*\"] }\n",
    );
    let server = Server::start(&mesh, &f.env(), &[]);

    // user/password first, then `token=`: a Handshake carrying `Bearer <token>`.
    let mut basic = server.client().await;
    basic
        .handshake("bi", "tableau")
        .await
        .expect("basic handshake");
    let token = basic.token().expect("token").clone();
    let mut jdbc = server.client().await;
    let mut request = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let response = jdbc
        .inner_mut()
        .handshake(request)
        .await
        .expect("bearer handshake");
    let renewed = response
        .metadata()
        .get("authorization")
        .expect("token header")
        .to_str()
        .expect("ascii");
    jdbc.set_token(renewed.trim_start_matches("Bearer ").to_string());

    // DatabaseMetaData: every SqlInfo at once, each with the union member JDBC reads.
    let info = jdbc.get_sql_info(vec![]).await.expect("sql info");
    let batches = fetch(&mut jdbc, info).await;
    let mut types = std::collections::BTreeMap::new();
    for batch in &batches {
        let ids = batch
            .column(0)
            .as_primitive::<arrow::datatypes::UInt32Type>();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<UnionArray>()
            .expect("union");
        for i in 0..batch.num_rows() {
            types.insert(ids.value(i), values.type_id(i));
        }
    }
    // 0 string, 1 bool, 2 bigint, 3 int32 bitmask, 4 string list.
    for (id, type_id) in [
        (0, 0),
        (3, 1),
        (504, 0),
        (506, 1),
        (507, 3),
        (508, 4),
        (509, 4),
        (541, 2),
        (562, 2),
        (567, 3),
    ] {
        assert_eq!(types.get(&id), Some(&type_id), "SqlInfo {id}");
    }
    assert!(types.len() >= 90, "only {} SqlInfo ids", types.len());

    // Every statement is prepared; an empty parameter schema for none, N fields for N `?`.
    let mut prepared = jdbc
        .prepare(
            "SELECT r_name FROM customer.geo.region ORDER BY r_regionkey".into(),
            None,
        )
        .await
        .expect("prepare");
    assert!(
        prepared
            .parameter_schema()
            .expect("params")
            .fields()
            .is_empty()
    );
    assert!(
        !prepared
            .dataset_schema()
            .expect("dataset")
            .fields()
            .is_empty(),
        "a query, not an update"
    );
    let info = prepared.execute().await.expect("execute");
    assert_eq!(rows(&fetch(&mut jdbc, info).await), 5);
    let prepared = jdbc
        .prepare(
            "SELECT * FROM customer.geo.nation WHERE n_regionkey = ? AND n_name <> ?".into(),
            None,
        )
        .await
        .expect("prepare");
    assert_eq!(
        prepared.parameter_schema().expect("params").fields().len(),
        2
    );

    // getPrimaryKeys: an empty result with the spec's columns.
    let info = jdbc
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: Some("customer".into()),
            db_schema: Some("geo".into()),
            table: "nation".into(),
        })
        .await
        .expect("primary keys");
    let schema = info.clone().try_decode_schema().expect("schema");
    assert_eq!(schema.field(3).name(), "column_name");
    assert_eq!(rows(&fetch(&mut jdbc, info).await), 0);
}

/// `--tls-cert/--tls-key`: the server speaks TLS (`grpc+tls://`), a client that trusts the
/// certificate runs queries, and a plaintext client gets nowhere.
#[tokio::test]
async fn tls() {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let f = fixture();
    let dir = tempfile::tempdir().expect("tmp");
    let path = |name: &str| dir.path().join(name).to_str().expect("utf8").to_string();
    let (cert, key, ca) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    // A test CA, and a server certificate it signs (a self-signed CA cert cannot serve).
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl must be installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = path("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=meshql test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    let csr = path("leaf.csr");
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    let ext = path("leaf.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);

    let server = Server::start(&f.mesh, &f.env(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        server.url.starts_with("grpc+tls://127.0.0.1:"),
        "{}",
        server.url
    );
    let https = server.url.replace("grpc+tls://", "https://");

    meshql_server::install_crypto_provider();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).expect("ca")))
        .domain_name("localhost");
    let channel = Channel::from_shared(https.clone())
        .expect("url")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("TLS connect");
    let mut client = FlightSqlServiceClient::new(channel);
    let info = client
        .execute("SELECT count(*) FROM customer.geo.region".into(), None)
        .await
        .expect("query over TLS");
    assert_eq!(rows(&fetch(&mut client, info).await), 1);

    // Plaintext to a TLS port fails.
    let plain = server.url.replace("grpc+tls://", "http://");
    let failed = match Channel::from_shared(plain).expect("url").connect().await {
        Err(_) => true,
        Ok(channel) => FlightSqlServiceClient::new(channel)
            .execute("SELECT 1".into(), None)
            .await
            .is_err(),
    };
    assert!(
        failed,
        "a plaintext client must not get an answer from a TLS port"
    );
}
