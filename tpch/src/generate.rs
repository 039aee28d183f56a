//! The eight TPC-H tables as Arrow record batches, with strings as plain `Utf8` so every
//! writer (CSV, JSON, Delta) and every client can read them.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Nation,
    Region,
    Part,
    Supplier,
    PartSupp,
    Customer,
    Orders,
    LineItem,
}

impl Table {
    pub const ALL: [Table; 8] = [
        Table::Nation,
        Table::Region,
        Table::Part,
        Table::Supplier,
        Table::PartSupp,
        Table::Customer,
        Table::Orders,
        Table::LineItem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Nation => "nation",
            Table::Region => "region",
            Table::Part => "part",
            Table::Supplier => "supplier",
            Table::PartSupp => "partsupp",
            Table::Customer => "customer",
            Table::Orders => "orders",
            Table::LineItem => "lineitem",
        }
    }
}

const BATCH_SIZE: usize = 8192;

/// All rows of `table` at `scale_factor`, in batches.
pub fn batches(table: Table, scale_factor: f64) -> Box<dyn Iterator<Item = RecordBatch> + Send> {
    let (sf, part, parts) = (scale_factor, 1, 1);
    let inner: Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>> + Send> =
        match table {
            Table::Nation => Box::new(
                NationArrow::new(NationGenerator::new(sf, part, parts)).with_batch_size(BATCH_SIZE),
            ),
            Table::Region => Box::new(
                RegionArrow::new(RegionGenerator::new(sf, part, parts)).with_batch_size(BATCH_SIZE),
            ),
            Table::Part => Box::new(
                PartArrow::new(PartGenerator::new(sf, part, parts)).with_batch_size(BATCH_SIZE),
            ),
            Table::Supplier => Box::new(
                SupplierArrow::new(SupplierGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_SIZE),
            ),
            Table::PartSupp => Box::new(
                PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_SIZE),
            ),
            Table::Customer => Box::new(
                CustomerArrow::new(CustomerGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_SIZE),
            ),
            Table::Orders => Box::new(
                OrderArrow::new(OrderGenerator::new(sf, part, parts)).with_batch_size(BATCH_SIZE),
            ),
            Table::LineItem => Box::new(
                LineItemArrow::new(LineItemGenerator::new(sf, part, parts))
                    .with_batch_size(BATCH_SIZE),
            ),
        };
    // Generation only fails if tpchgen-arrow builds an invalid batch: a bug, not input.
    Box::new(inner.map(|batch| plain_strings(batch.expect("tpchgen-arrow builds valid batches"))))
}

/// Cast `Utf8View` columns to `Utf8`.
pub fn plain_strings(batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8View)
    {
        return batch;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            // Utf8View -> Utf8 is infallible.
            DataType::Utf8View => cast(c, &DataType::Utf8).unwrap_or_else(|_| Arc::clone(c)),
            _ => Arc::clone(c),
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or(batch)
}
