//! The mesh registry: every domain, data product, output port and source of a loaded
//! mesh, with each port's table (or why it is unavailable), and its registration as
//! DataFusion catalogs.

pub mod cache;
pub mod catalog;
pub mod derived;
pub mod meta;
pub mod port;
pub mod refresh;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use futures::StreamExt;

use crate::connector::{ConnectorRegistry, PortLocation, Source, SourceContext};
use crate::problem::Problem;
use catalog::{DomainCatalog, ProductSchema};
use meshql_config::decode::closest;
use meshql_config::load::{DomainSpec, MeshSpec, Origin, PortSpec, SourceSpec};
use meshql_config::model::PortConfig;
use port::{Opener, PortEntry, PortInfo, PortKind, PortState, Reopen};

/// Ports opened at the same time while a mesh loads.
const OPEN_CONCURRENCY: usize = 8;

#[derive(Debug)]
pub struct DomainInfo {
    pub name: String,
    pub origin: Origin,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub products: BTreeMap<String, ProductInfo>,
}

#[derive(Debug)]
pub struct ProductInfo {
    pub name: String,
    pub origin: Origin,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub ports: BTreeMap<String, Arc<PortEntry>>,
}

#[derive(Debug)]
pub struct SourceInfo {
    pub name: String,
    pub origin: Origin,
    pub kind: Option<String>,
    pub location: Option<String>,
    pub source: Option<Arc<dyn Source>>,
    pub problem: Option<Problem>,
}

/// A loaded mesh.
#[derive(Debug)]
pub struct MeshRegistry {
    pub domains: BTreeMap<String, DomainInfo>,
    pub sources: BTreeMap<String, SourceInfo>,
    /// Problems found while loading that are not a port's own state: included files,
    /// domains, products and sources that could not be used, undocumented columns.
    pub problems: Vec<Problem>,
    /// What ports are (re)opened with.
    pub opener: Opener,
}

impl MeshRegistry {
    /// Every port with its domain, in name order.
    pub fn ports(&self) -> impl Iterator<Item = (&DomainInfo, &Arc<PortEntry>)> {
        self.domains.values().flat_map(|d| {
            d.products
                .values()
                .flat_map(move |p| p.ports.values().map(move |port| (d, port)))
        })
    }

    /// Problems of ports that cannot be read right now.
    pub fn derived_ports(&self) -> Vec<Arc<PortEntry>> {
        self.ports()
            .filter(|(_, p)| p.info.kind == PortKind::Derived)
            .map(|(_, p)| Arc::clone(p))
            .collect()
    }

    /// Documented columns that the open ports do not have.
    pub fn column_problems(&self) -> Vec<Problem> {
        self.ports()
            .flat_map(|(_, p)| undocumented_columns(p))
            .collect()
    }

    pub fn port_problems(&self) -> Vec<Problem> {
        self.ports()
            .filter_map(|(_, port)| match port.state() {
                PortState::Broken { problem, .. } => Some(problem),
                PortState::Ready(_) => None,
            })
            .collect()
    }
}

/// Open every source and port of `spec` and register the mesh in `ctx`: one catalog per
/// domain, plus the `mesh` catalog of metadata. Derived ports are left for
/// [`derived::plan_derived_ports`], which needs the governance built on this registry.
pub async fn register_mesh(
    spec: MeshSpec,
    connectors: &ConnectorRegistry,
    ctx: &SessionContext,
) -> Arc<MeshRegistry> {
    let mut problems = spec.problems;
    let runtime = ctx.runtime_env();
    let sources: BTreeMap<String, SourceInfo> = spec
        .sources
        .into_values()
        .map(|s| (s.name.clone(), open_source(s, connectors, &runtime)))
        .collect();
    problems.extend(sources.values().filter_map(|s| s.problem.clone()));

    // Declare every port; source ports get what they need to open.
    let mut to_open = Vec::new();
    let opener = Opener {
        runtime: ctx.runtime_env(),
        config: ctx.copied_config(),
    };
    let opening_state = opener.state();
    let mut domains = BTreeMap::new();
    for domain in spec.domains.into_values() {
        let info = declare_domain(domain, &sources, &mut to_open);
        domains.insert(info.name.clone(), info);
    }

    // Open source ports concurrently; one slow or broken source does not hold up others.
    futures::stream::iter(to_open)
        .for_each_concurrent(
            OPEN_CONCURRENCY,
            |(entry, reopen): (Arc<PortEntry>, Reopen)| {
                let state = &opening_state;
                async move {
                    // A port that fails keeps its problem as its state.
                    let _ = entry.open_now(&reopen, state).await;
                }
            },
        )
        .await;

    for domain in domains.values() {
        let products = domain
            .products
            .values()
            .map(|p| {
                let schema =
                    ProductSchema::new(domain.owner.clone(), p.ports.clone(), opener.clone());
                (p.name.clone(), Arc::new(schema))
            })
            .collect();
        ctx.register_catalog(domain.name.clone(), Arc::new(DomainCatalog::new(products)));
    }

    let registry = Arc::new(MeshRegistry {
        domains,
        sources,
        problems,
        opener,
    });
    ctx.register_catalog(
        meta::META_CATALOG,
        Arc::new(meta::MetaCatalog::new(Arc::clone(&registry))),
    );
    registry
}

fn open_source(
    spec: SourceSpec,
    connectors: &ConnectorRegistry,
    runtime: &Arc<datafusion::execution::runtime_env::RuntimeEnv>,
) -> SourceInfo {
    let subject = format!("source `{}`", spec.name);
    let mut info = SourceInfo {
        name: spec.name.clone(),
        origin: spec.origin.clone(),
        kind: None,
        location: None,
        source: None,
        problem: None,
    };
    let config = match spec.config {
        Ok(config) => config,
        Err(problem) => {
            info.problem = Some(problem);
            return info;
        }
    };
    info.kind = Some(config.kind.clone());
    let Some(connector) = connectors.get(&config.kind) else {
        let kinds: Vec<String> = connectors.kinds().iter().map(|k| k.to_string()).collect();
        let mut problem = spec
            .origin
            .problem_at(
                &["kind".into()],
                format!("unknown source kind `{}`", config.kind),
            )
            .with_subject(subject);
        problem = match closest(&config.kind, &kinds) {
            Some(best) => problem.with_help(format!("did you mean `{best}`?")),
            None => problem.with_help(format!("this meshql supports: {}", kinds.join(", "))),
        };
        info.problem = Some(problem);
        return info;
    };
    let ctx = SourceContext {
        name: &spec.name,
        base_dir: &spec.origin.file.dir,
        runtime,
    };
    match connector.open_source(&config.kind, &config.options, &ctx) {
        Ok(source) => {
            info.location = Some(source.location());
            info.source = Some(source);
        }
        Err(e) => {
            info.problem = Some(e.into_problem(&spec.origin, subject));
        }
    }
    info
}

fn declare_domain(
    domain: DomainSpec,
    sources: &BTreeMap<String, SourceInfo>,
    to_open: &mut Vec<(Arc<PortEntry>, Reopen)>,
) -> DomainInfo {
    let products = domain
        .products
        .into_values()
        .map(|product| {
            let ports = product
                .ports
                .into_values()
                .map(|spec| {
                    let entry = declare_port(spec, sources, to_open);
                    (entry.info.name.port.clone(), entry)
                })
                .collect();
            let info = ProductInfo {
                name: product.name,
                origin: product.origin,
                description: product.config.description,
                tags: product.config.tags,
                ports,
            };
            (info.name.clone(), info)
        })
        .collect();
    DomainInfo {
        name: domain.name,
        origin: domain.origin,
        owner: domain.config.owner,
        description: domain.config.description,
        tags: domain.config.tags,
        products,
    }
}

/// A port entry in its initial state: broken with its problem, or waiting to be opened
/// (source ports, queued in `to_open`) or planned (derived ports).
fn declare_port(
    spec: PortSpec,
    sources: &BTreeMap<String, SourceInfo>,
    to_open: &mut Vec<(Arc<PortEntry>, Reopen)>,
) -> Arc<PortEntry> {
    let subject = spec.subject();
    let (config, problem) = match spec.config {
        Ok(config) => (config, None),
        Err(problem) => (PortConfig::default(), Some(problem)),
    };
    let mut info = PortInfo {
        name: spec.name,
        origin: spec.origin,
        kind: if config.sql.is_some() {
            PortKind::Derived
        } else {
            PortKind::Source
        },
        description: config.description,
        tags: config.tags,
        columns: config.columns,
        source: config.source,
        location: PortLocation::default(),
        sql: config.sql,
        cache: config.cache,
    };
    let not_yet = || {
        PortState::broken(Problem::new(
            &info.origin.file.path,
            info.origin.position(),
            "not opened yet",
        ))
    };
    if let Some(problem) = problem {
        return Arc::new(PortEntry::new(info, None, PortState::broken(problem)));
    }
    let Some(source_name) = info.source.clone() else {
        let state = not_yet();
        return Arc::new(PortEntry::new(info, None, state));
    };
    let source = match sources.get(&source_name) {
        None => {
            let names: Vec<String> = sources.keys().cloned().collect();
            let mut problem = info
                .origin
                .problem_at(
                    &["source".into()],
                    format!("unknown source `{source_name}`"),
                )
                .with_subject(subject);
            problem = match closest(&source_name, &names) {
                Some(best) => problem.with_help(format!("did you mean `{best}`?")),
                None if names.is_empty() => problem.with_help("declare it under `sources:`"),
                None => problem.with_help(format!("declared sources: {}", names.join(", "))),
            };
            return Arc::new(PortEntry::new(info, None, PortState::broken(problem)));
        }
        Some(SourceInfo {
            source: Some(source),
            ..
        }) => Arc::clone(source),
        Some(SourceInfo { problem, .. }) => {
            let cause = problem
                .as_ref()
                .map(|p| p.describe_without_subject())
                .unwrap_or_default();
            let problem = info
                .origin
                .problem_at(
                    &["source".into()],
                    format!("source `{source_name}` is unavailable: {cause}"),
                )
                .with_subject(subject);
            return Arc::new(PortEntry::new(info, None, PortState::broken(problem)));
        }
    };
    match source.describe_port(&config.location) {
        Ok(location) => info.location = location,
        Err(e) => {
            let problem = e.into_problem(&info.origin, subject);
            return Arc::new(PortEntry::new(info, None, PortState::broken(problem)));
        }
    }
    let reopen = Reopen {
        source,
        options: config.location,
    };
    let state = not_yet();
    let entry = Arc::new(PortEntry::new(info, Some(reopen.clone()), state));
    to_open.push((Arc::clone(&entry), reopen));
    entry
}

/// Documented columns that the port does not have: a typo or a renamed column.
fn undocumented_columns(port: &PortEntry) -> Vec<Problem> {
    let Some(table) = port.table() else {
        return Vec::new();
    };
    let schema = table.schema();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    port.info
        .columns
        .keys()
        .filter(|c| !names.contains(c))
        .map(|c| {
            let problem = port
                .info
                .origin
                .problem_at(
                    &["columns".into(), c.clone()],
                    format!("documents column `{c}`, which the port does not have"),
                )
                .with_subject(format!("output port `{}`", port.info.name));
            match closest(c, &names) {
                Some(best) => problem.with_help(format!("did you mean `{best}`?")),
                None => problem.with_help(format!("the port's columns are: {}", names.join(", "))),
            }
        })
        .collect()
}
