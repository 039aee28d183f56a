//! Metadata RPCs: catalogs (domains), schemas (data products), tables (output ports)
//! with their columns, table types, XDBC type info and the (empty) key commands.
//! arrow-flight's builders give each result exactly the spec's schema and apply the
//! client's filters.

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, XdbcDataType,
};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::SchemaProvider;
use datafusion::logical_expr::TableType;
use meshql_engine::{MeshEngine, MeshSession};

use super::statement::client_schema;

pub(crate) const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

/// Column metadata key for remarks (descriptions), as Flight SQL defines it.
const REMARKS: &str = "ARROW:FLIGHT:SQL:REMARKS";

/// Listings are made from the caller's session: only what the caller may read.
pub(crate) fn catalogs(
    session: &MeshSession,
    query: CommandGetCatalogs,
) -> Result<RecordBatch, FlightError> {
    let mut names = session.context().catalog_names();
    names.sort();
    let mut builder = query.into_builder();
    for name in names {
        builder.append(name);
    }
    builder.build()
}

/// Every (catalog, schema) pair, sorted: the domains' data products plus `mesh.meta`
/// and the information schemas.
fn schemas_sorted(session: &MeshSession) -> Vec<(String, String, Arc<dyn SchemaProvider>)> {
    let ctx = session.context();
    let mut out = Vec::new();
    let mut catalogs = ctx.catalog_names();
    catalogs.sort();
    for catalog_name in catalogs {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        let mut schemas = catalog.schema_names();
        schemas.sort();
        for schema_name in schemas {
            if let Some(schema) = catalog.schema(&schema_name) {
                out.push((catalog_name.clone(), schema_name, schema));
            }
        }
    }
    out
}

pub(crate) fn schemas(
    session: &MeshSession,
    query: CommandGetDbSchemas,
) -> Result<RecordBatch, FlightError> {
    let mut builder = query.into_builder();
    for (catalog_name, schema_name, _) in schemas_sorted(session) {
        builder.append(catalog_name, schema_name);
    }
    builder.build()
}

/// Tables of every catalog (no catalog in the request means all, as ADBC expects), with
/// their Arrow schema when asked, column descriptions as remarks.
pub(crate) async fn tables(
    engine: &MeshEngine,
    session: &MeshSession,
    query: CommandGetTables,
) -> Result<RecordBatch, FlightError> {
    let include_schema = query.include_schema;
    let mut builder = query.into_builder();
    for (catalog_name, schema_name, schema) in schemas_sorted(session) {
        let mut tables = schema.table_names();
        tables.sort();
        for table_name in tables {
            // A port that broke since it was listed is skipped, not an error.
            let Ok(Some(table)) = schema.table(&table_name).await else {
                continue;
            };
            let table_type = match table.table_type() {
                TableType::View => "VIEW",
                _ => "TABLE",
            };
            let arrow_schema = if include_schema {
                with_remarks(
                    engine,
                    &catalog_name,
                    &schema_name,
                    &table_name,
                    &client_schema(&table.schema()),
                )
            } else {
                Schema::empty()
            };
            builder.append(
                &catalog_name,
                &schema_name,
                &table_name,
                table_type,
                &arrow_schema,
            )?;
        }
    }
    builder.build()
}

/// The port's documented column descriptions as Flight SQL remarks.
fn with_remarks(
    engine: &MeshEngine,
    domain: &str,
    product: &str,
    port: &str,
    schema: &Schema,
) -> Schema {
    let entry = engine
        .registry()
        .domains
        .get(domain)
        .and_then(|d| d.products.get(product))
        .and_then(|p| p.ports.get(port));
    let Some(entry) = entry else {
        return schema.clone();
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let description = entry
                .info
                .columns
                .get(f.name())
                .and_then(|c| c.description.clone());
            match description {
                Some(text) => {
                    let mut metadata = f.metadata().clone();
                    metadata.insert(REMARKS.to_string(), text);
                    f.as_ref().clone().with_metadata(metadata)
                }
                None => f.as_ref().clone(),
            }
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

pub(crate) fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

pub(crate) fn foreign_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// The SQL types meshql can return, for GetXdbcTypeInfo.
pub(crate) fn xdbc_type_info() -> XdbcTypeInfoData {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let types: [(&str, XdbcDataType, Option<i32>, bool); 11] = [
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false),
        ("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10), false),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19), false),
        ("REAL", XdbcDataType::XdbcFloat, Some(24), false),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), false),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
        ("DATE", XdbcDataType::XdbcDate, Some(10), false),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29), false),
    ];
    for (name, data_type, size, text) in types {
        builder.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: text.then(|| "'".to_string()),
            literal_suffix: text.then(|| "'".to_string()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: (!text).then_some(false),
            fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
            auto_increment: Some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: (!text).then_some(10),
            interval_precision: None,
        });
    }
    // The list is static: building it cannot fail.
    builder
        .build()
        .unwrap_or_else(|e| panic!("static XDBC type list is invalid: {e}"))
}
