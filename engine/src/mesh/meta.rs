//! The `mesh` system catalog: the mesh's own metadata as SQL tables in `mesh.meta`, so a
//! consumer can ask "every port with a column tagged pii" in SQL. Rows are built at scan
//! time from the registry, so port status is always current.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, ListBuilder, RecordBatch, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, Session, TableProvider};
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::MeshRegistry;
use super::port::{PortKind, PortState};
use meshql_config::PortName;

/// Which ports the reader may see; metadata of the others is left out.
pub type Visibility = Arc<dyn Fn(&PortName) -> bool + Send + Sync>;

pub const META_CATALOG: &str = "mesh";
pub const META_SCHEMA: &str = "meta";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MetaKind {
    Domains,
    Products,
    OutputPorts,
    Columns,
    Sources,
}

impl MetaKind {
    const ALL: [MetaKind; 5] = [
        MetaKind::Domains,
        MetaKind::Products,
        MetaKind::OutputPorts,
        MetaKind::Columns,
        MetaKind::Sources,
    ];

    fn name(self) -> &'static str {
        match self {
            MetaKind::Domains => "domains",
            MetaKind::Products => "products",
            MetaKind::OutputPorts => "output_ports",
            MetaKind::Columns => "columns",
            MetaKind::Sources => "sources",
        }
    }

    fn schema(self) -> SchemaRef {
        let s = |name: &str| Field::new(name, DataType::Utf8, true);
        let tags = || {
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            )
        };
        let fields = match self {
            MetaKind::Domains => vec![
                s("domain"),
                s("owner"),
                s("description"),
                tags(),
                s("declared_at"),
            ],
            MetaKind::Products => vec![
                s("domain"),
                s("product"),
                s("owner"),
                s("description"),
                tags(),
                s("declared_at"),
            ],
            MetaKind::OutputPorts => vec![
                s("domain"),
                s("product"),
                s("port"),
                s("name"),
                s("owner"),
                s("kind"),
                s("source"),
                s("format"),
                s("location"),
                s("description"),
                tags(),
                s("status"),
                s("error"),
                s("cache"),
                s("declared_at"),
            ],
            MetaKind::Columns => vec![
                s("domain"),
                s("product"),
                s("port"),
                s("column_name"),
                Field::new("ordinal_position", DataType::UInt32, true),
                s("data_type"),
                Field::new("is_nullable", DataType::Boolean, true),
                s("description"),
                tags(),
                s("owner"),
            ],
            MetaKind::Sources => vec![
                s("source"),
                s("kind"),
                s("location"),
                s("status"),
                s("error"),
                s("declared_at"),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// The `mesh` catalog with its single schema `meta`.
#[derive(Debug)]
pub struct MetaCatalog {
    schema: Arc<MetaSchema>,
}

impl MetaCatalog {
    /// The whole mesh, for the platform itself.
    pub fn new(registry: Arc<MeshRegistry>) -> Self {
        Self::filtered(registry, None, Vec::new())
    }

    /// The mesh as one reader sees it, with extra tables (the audit log, grants).
    pub fn filtered(
        registry: Arc<MeshRegistry>,
        visible: Option<Visibility>,
        extra: Vec<(String, Arc<dyn TableProvider>)>,
    ) -> Self {
        let mut tables: BTreeMap<String, Arc<dyn TableProvider>> = MetaKind::ALL
            .into_iter()
            .map(|kind| {
                let table: Arc<dyn TableProvider> = Arc::new(MetaTable {
                    kind,
                    schema: kind.schema(),
                    registry: Arc::clone(&registry),
                    visible: visible.clone(),
                });
                (kind.name().to_string(), table)
            })
            .collect();
        tables.extend(extra);
        MetaCatalog {
            schema: Arc::new(MetaSchema { tables }),
        }
    }
}

impl CatalogProvider for MetaCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![META_SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == META_SCHEMA).then(|| Arc::clone(&self.schema) as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct MetaSchema {
    tables: BTreeMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for MetaSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.tables.get(name).map(Arc::clone))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.contains_key(name)
    }
}

struct MetaTable {
    kind: MetaKind,
    schema: SchemaRef,
    registry: Arc<MeshRegistry>,
    visible: Option<Visibility>,
}

impl std::fmt::Debug for MetaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetaTable({})", self.kind.name())
    }
}

#[async_trait]
impl TableProvider for MetaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let visible = |name: &PortName| self.visible.as_ref().is_none_or(|v| v(name));
        let restricted = self.visible.is_some();
        let batch = build(
            self.kind,
            Arc::clone(&self.schema),
            &self.registry,
            &visible,
            restricted,
        )?;
        scan_batch(batch, state, projection, filters, limit).await
    }
}

/// Scan one batch built at scan time (metadata tables), with the usual pushdown.
pub(crate) async fn scan_batch(
    batch: RecordBatch,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    MemTable::try_new(batch.schema(), vec![vec![batch]])?
        .scan(state, projection, filters, limit)
        .await
}

type Col = Vec<Option<String>>;

fn strings(values: Col) -> ArrayRef {
    Arc::new(StringArray::from(values))
}

/// A `List<Utf8>` column, one list per row.
pub(crate) fn tag_lists(values: Vec<Vec<String>>) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    for tags in values {
        for tag in tags {
            builder.values().append_value(tag);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// Where something is declared: the file's full path for administrators and open
/// meshes; for restricted readers only the file's name (the server's directories are
/// not theirs to know).
fn at(origin: &meshql_config::Origin, restricted: bool) -> Option<String> {
    let p = origin.position();
    let file = if restricted {
        origin
            .file
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    } else {
        origin.file.path.display().to_string()
    };
    Some(format!("{file}:{}:{}", p.line, p.column))
}

fn build(
    kind: MetaKind,
    schema: SchemaRef,
    registry: &MeshRegistry,
    visible: &dyn Fn(&PortName) -> bool,
    restricted: bool,
) -> DFResult<RecordBatch> {
    let sees_product =
        |p: &super::ProductInfo| p.ports.values().any(|port| visible(&port.info.name));
    let sees_domain = |d: &super::DomainInfo| d.products.values().any(sees_product);
    let ports = || registry.ports().filter(|(_, p)| visible(&p.info.name));
    let columns: Vec<ArrayRef> = match kind {
        MetaKind::Domains => {
            let (mut name, mut owner, mut desc, mut tags, mut decl) =
                (vec![], vec![], vec![], vec![], vec![]);
            for d in registry.domains.values().filter(|d| sees_domain(d)) {
                name.push(Some(d.name.clone()));
                owner.push(d.owner.clone());
                desc.push(d.description.clone());
                tags.push(d.tags.clone());
                decl.push(at(&d.origin, restricted));
            }
            vec![
                strings(name),
                strings(owner),
                strings(desc),
                tag_lists(tags),
                strings(decl),
            ]
        }
        MetaKind::Products => {
            let (mut dom, mut name, mut owner, mut desc, mut tags, mut decl) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for d in registry.domains.values() {
                for p in d.products.values().filter(|p| sees_product(p)) {
                    dom.push(Some(d.name.clone()));
                    name.push(Some(p.name.clone()));
                    owner.push(d.owner.clone());
                    desc.push(p.description.clone());
                    tags.push(p.tags.clone());
                    decl.push(at(&p.origin, restricted));
                }
            }
            vec![
                strings(dom),
                strings(name),
                strings(owner),
                strings(desc),
                tag_lists(tags),
                strings(decl),
            ]
        }
        MetaKind::OutputPorts => {
            let mut cols: [Col; 14] = Default::default();
            let mut tags = vec![];
            for (domain, port) in ports() {
                let info = &port.info;
                let (status, error) = match port.state() {
                    PortState::Ready(_) => ("available", None),
                    // A derived port fails on its inputs, which a restricted reader
                    // may not be allowed to know about.
                    PortState::Broken { .. } if restricted && info.kind == PortKind::Derived => (
                        "unavailable",
                        Some("an administrator can see why with `meshql check`".to_string()),
                    ),
                    PortState::Broken { problem, .. } => {
                        ("unavailable", Some(problem.describe_without_subject()))
                    }
                };
                let values = [
                    Some(info.name.domain.clone()),
                    Some(info.name.product.clone()),
                    Some(info.name.port.clone()),
                    Some(info.name.to_string()),
                    domain.owner.clone(),
                    Some(match info.kind {
                        PortKind::Source => "source".to_string(),
                        PortKind::Derived => "derived".to_string(),
                    }),
                    info.source.clone(),
                    Some(info.location.format.clone()).filter(|s| !s.is_empty()),
                    Some(info.location.location.clone()).filter(|s| !s.is_empty()),
                    info.description.clone(),
                    Some(status.to_string()),
                    error,
                    // Row counts and sizes are the unfiltered port's: not for a reader
                    // whose view of it may be filtered.
                    port.cache_status().map(|s| match restricted {
                        true => s.split(':').next().unwrap_or_default().to_string(),
                        false => s,
                    }),
                    at(&info.origin, restricted),
                ];
                for (col, value) in cols.iter_mut().zip(values) {
                    col.push(value);
                }
                tags.push(info.tags.clone());
            }
            let mut arrays: Vec<ArrayRef> = cols.into_iter().map(strings).collect();
            arrays.insert(10, tag_lists(tags));
            arrays
        }
        MetaKind::Columns => {
            let (mut dom, mut prod, mut port_col, mut name, mut desc, mut owner) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            let (mut ordinal, mut dtype, mut nullable, mut tags) = (vec![], vec![], vec![], vec![]);
            for (domain, port) in ports() {
                let info = &port.info;
                // Columns of an unavailable port: the documented ones, without types.
                let fields: Vec<(String, Option<String>, Option<bool>)> = match port.table() {
                    Some(table) => table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| {
                            (
                                f.name().clone(),
                                Some(f.data_type().to_string()),
                                // Governed reads declare every column nullable (masks
                                // may null them); so does this, for restricted readers.
                                Some(f.is_nullable() || restricted),
                            )
                        })
                        .collect(),
                    None => info
                        .columns
                        .keys()
                        .map(|c| (c.clone(), None, None))
                        .collect(),
                };
                for (i, (column, data_type, is_nullable)) in fields.into_iter().enumerate() {
                    let doc = info.columns.get(&column);
                    dom.push(Some(info.name.domain.clone()));
                    prod.push(Some(info.name.product.clone()));
                    port_col.push(Some(info.name.port.clone()));
                    name.push(Some(column));
                    ordinal.push(Some(i as u32 + 1));
                    dtype.push(data_type);
                    nullable.push(is_nullable);
                    desc.push(doc.and_then(|d| d.description.clone()));
                    tags.push(doc.map(|d| d.tags.clone()).unwrap_or_default());
                    owner.push(domain.owner.clone());
                }
            }
            vec![
                strings(dom),
                strings(prod),
                strings(port_col),
                strings(name),
                Arc::new(UInt32Array::from(ordinal)),
                strings(dtype),
                Arc::new(BooleanArray::from(nullable)),
                strings(desc),
                tag_lists(tags),
                strings(owner),
            ]
        }
        MetaKind::Sources => {
            let mut cols: [Col; 6] = Default::default();
            let used: std::collections::BTreeSet<&str> = ports()
                .filter_map(|(_, p)| p.info.source.as_deref())
                .collect();
            let all = registry.ports().count() == ports().count();
            for s in registry
                .sources
                .values()
                .filter(|s| all || used.contains(s.name.as_str()))
            {
                let values = [
                    Some(s.name.clone()),
                    s.kind.clone(),
                    s.location.clone(),
                    Some(
                        if s.problem.is_none() {
                            "available"
                        } else {
                            "unavailable"
                        }
                        .to_string(),
                    ),
                    s.problem.as_ref().map(|p| p.describe_without_subject()),
                    at(&s.origin, restricted),
                ];
                for (col, value) in cols.iter_mut().zip(values) {
                    col.push(value);
                }
            }
            cols.into_iter().map(strings).collect()
        }
    };
    Ok(RecordBatch::try_new(schema, columns)?)
}
