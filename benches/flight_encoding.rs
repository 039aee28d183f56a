//! The Flight encoding path of every result: batches cast to the types clients read
//! (string views to strings), IPC-encoded into Flight data, and each message encoded as
//! protobuf, as tonic does before writing it to the socket. TPC-H lineitem (SF 0.1, 8192
//! rows per batch), with strings as views (what Parquet scans produce) and as plain
//! strings (no cast needed), through meshql's encoder and, for comparison, through
//! arrow-flight's `FlightDataEncoder` with prost (two copies of every buffer where
//! meshql makes one). Criterion reports batches per second.
//!
//! `cargo bench --bench flight_encoding` (see docs/benchmarks.md#flight-encoding).

// A benchmark, like a test, should stop at the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use meshql_server::{client_schema, encode};
use meshql_tpch::generate::{Table, batches};
use prost::Message;

/// The batches with every string column as `Utf8View`.
fn as_views(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    let schema = batches[0].schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    let view_schema = Arc::new(Schema::new(fields));
    batches
        .iter()
        .map(|b| {
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .zip(view_schema.fields())
                .map(|(c, f)| cast(c, f.data_type()).unwrap())
                .collect();
            RecordBatch::try_new(Arc::clone(&view_schema), columns).unwrap()
        })
        .collect()
}

/// Encode all batches as a server would send them: (messages, protobuf bytes). Each
/// message gets a buffer of its own, as in tonic (which hands each one to HTTP/2).
async fn encode_all(batches: &[RecordBatch]) -> (usize, usize) {
    let schema = client_schema(&batches[0].schema());
    // The encoder owns its input, as a query's stream does.
    let owned: Vec<RecordBatch> = batches.to_vec();
    let input = futures::stream::iter(owned.into_iter().map(Ok));
    let mut flight = encode(schema, input);
    let (mut messages, mut bytes) = (0, 0);
    while let Some(frame) = flight.next().await {
        let frame = frame.unwrap();
        let mut buf = BytesMut::with_capacity(frame.encoded_len());
        frame.write(&mut buf).unwrap();
        bytes += buf.len();
        messages += 1;
    }
    (messages, bytes)
}

/// The same through arrow-flight's encoder and prost (plain strings only: the cast
/// costs the same on both paths).
async fn encode_all_arrow_flight(batches: &[RecordBatch]) -> (usize, usize) {
    let owned: Vec<RecordBatch> = batches.to_vec();
    let input = futures::stream::iter(owned.into_iter().map(Ok));
    let mut flight = FlightDataEncoderBuilder::new()
        .with_schema(batches[0].schema())
        .build(input);
    let (mut messages, mut bytes) = (0, 0);
    while let Some(data) = flight.next().await {
        let data = data.unwrap();
        let mut buf = BytesMut::with_capacity(data.encoded_len());
        data.encode(&mut buf).unwrap();
        bytes += buf.len();
        messages += 1;
    }
    (messages, bytes)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain: Vec<RecordBatch> = batches(Table::LineItem, 0.1).collect();
    let views = as_views(&plain);
    let rows: usize = plain.iter().map(RecordBatch::num_rows).sum();
    let mut group = c.benchmark_group(format!(
        "Flight-encode lineitem SF0.1 ({} batches, {rows} rows)",
        plain.len()
    ));
    group.throughput(Throughput::Elements(plain.len() as u64));
    group.sample_size(20);
    for (name, input) in [("strings as views", &views), ("plain strings", &plain)] {
        // Every batch must come out (plus the schema message), or the figure means nothing.
        let (messages, bytes) = rt.block_on(encode_all(input));
        assert_eq!(messages, input.len() + 1, "{name}");
        assert!(bytes > 0);
        group.bench_function(name, |b| b.iter(|| rt.block_on(encode_all(input))));
    }
    // The same messages (ours keep the IPC stream's padding of headers to 64 bytes):
    // only the copies differ.
    let (ours, theirs) = (
        rt.block_on(encode_all(&plain)),
        rt.block_on(encode_all_arrow_flight(&plain)),
    );
    assert_eq!(ours.0, theirs.0);
    assert!(
        ours.1.abs_diff(theirs.1) <= 64 * ours.0,
        "{ours:?} vs {theirs:?}"
    );
    group.bench_function("plain strings, arrow-flight's encoder", |b| {
        b.iter(|| rt.block_on(encode_all_arrow_flight(&plain)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
