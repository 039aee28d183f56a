//! Reading a mesh: the main file, its includes, `${env:VAR}` interpolation, and
//! decoding every source, domain, product and port on its own so that one bad entry is
//! reported with its file and line and the rest of the mesh still loads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_yaml::Value;

use super::access::AccessConfig;
use super::decode::{DecodeError, decode};
use super::interpolate::{MissingVar, interpolate};
use super::model::*;
use super::spans::{KeyPath, Position, SpanIndex};
use crate::problem::{Problem, display_all};

/// Why a mesh cannot be used at all: the main file is unreadable or invalid, or its
/// `access:` section has a problem (a server never falls back to open mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_all(&self.0))
    }
}

impl std::error::Error for ConfigError {}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// Catalog names meshql itself uses; domains cannot take them.
pub const RESERVED_CATALOGS: &[&str] = &["mesh", "datafusion", "information_schema"];

/// One YAML file of the mesh, with the positions of its keys.
#[derive(Debug)]
pub struct MeshFile {
    pub path: PathBuf,
    /// Directory that relative paths in this file are resolved against.
    pub dir: PathBuf,
    spans: SpanIndex,
}

impl MeshFile {
    pub fn position(&self, path: &[String]) -> Position {
        self.spans.find(path)
    }

    pub fn problem(&self, path: &[String], message: impl Into<String>) -> Problem {
        Problem::new(&self.path, self.position(path), message)
    }
}

/// Where an entity is declared: its file and key path, for pointing problems at it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: Arc<MeshFile>,
    pub path: KeyPath,
}

impl Origin {
    pub fn child(&self, key: &str) -> Origin {
        let mut path = self.path.clone();
        path.push(key.to_string());
        Origin {
            file: Arc::clone(&self.file),
            path,
        }
    }

    pub fn position(&self) -> Position {
        self.file.position(&self.path)
    }

    /// A problem at `relative` (a key path inside this entity).
    pub fn problem_at(&self, relative: &[String], message: impl Into<String>) -> Problem {
        let mut path = self.path.clone();
        path.extend(relative.iter().cloned());
        self.file.problem(&path, message)
    }

    pub fn problem(&self, message: impl Into<String>) -> Problem {
        self.problem_at(&[], message)
    }

    fn decode_problem(&self, err: DecodeError) -> Problem {
        self.problem_at(&err.path, err.message)
    }
}

/// `domain.product.port`, the SQL name of an output port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortName {
    pub domain: String,
    pub product: String,
    pub port: String,
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.domain, self.product, self.port)
    }
}

#[derive(Debug)]
pub struct SourceSpec {
    pub name: String,
    pub origin: Origin,
    /// The decoded declaration, or why it could not be decoded.
    pub config: std::result::Result<SourceConfig, Problem>,
}

#[derive(Debug)]
pub struct DomainSpec {
    pub name: String,
    pub origin: Origin,
    pub config: DomainConfig,
    pub products: BTreeMap<String, ProductSpec>,
}

#[derive(Debug)]
pub struct ProductSpec {
    pub name: String,
    pub origin: Origin,
    pub config: ProductConfig,
    pub ports: BTreeMap<String, PortSpec>,
}

#[derive(Debug)]
pub struct PortSpec {
    pub name: PortName,
    pub origin: Origin,
    /// The decoded declaration, or why the port cannot be served.
    pub config: std::result::Result<PortConfig, Problem>,
}

impl PortSpec {
    pub fn subject(&self) -> String {
        format!("output port `{}`", self.name)
    }
}

/// A whole mesh as declared: every file read, every entity decoded or rejected.
#[derive(Debug)]
pub struct MeshSpec {
    pub root: Arc<MeshFile>,
    pub files: Vec<Arc<MeshFile>>,
    pub sources: BTreeMap<String, SourceSpec>,
    pub domains: BTreeMap<String, DomainSpec>,
    /// Problems outside sources and ports (whose problems stay in their `config`): an
    /// included file, a domain or a product that was skipped.
    pub problems: Vec<Problem>,
    /// The `access:` section; `None` means the mesh runs open (loopback only).
    pub access: Option<AccessConfig>,
}

impl MeshSpec {
    /// Where the main file's keys are (for problems about a whole section).
    pub fn root_origin(&self) -> Origin {
        Origin {
            file: Arc::clone(&self.root),
            path: Vec::new(),
        }
    }

    pub fn ports(&self) -> impl Iterator<Item = &PortSpec> {
        self.domains
            .values()
            .flat_map(|d| d.products.values())
            .flat_map(|p| p.ports.values())
    }

    pub fn port(&self, name: &PortName) -> Option<&PortSpec> {
        self.domains
            .get(&name.domain)?
            .products
            .get(&name.product)?
            .ports
            .get(&name.port)
    }
}

/// Load the mesh rooted at `path`, reading variables from the process environment.
pub fn load_mesh(path: &Path) -> Result<MeshSpec> {
    load_mesh_with_env(path, &|name| std::env::var(name).ok())
}

/// Load the mesh rooted at `path`, reading `${env:VAR}` through `lookup`.
///
/// Fails only when the main file itself cannot be used; everything else becomes a
/// [`Problem`] in [`MeshSpec::problems`].
pub fn load_mesh_with_env(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MeshSpec> {
    let mut loader = Loader {
        lookup,
        problems: Vec::new(),
        sources: BTreeMap::new(),
        domains: BTreeMap::new(),
        files: Vec::new(),
        missing: Vec::new(),
    };
    let (root, value) = loader
        .read_file(path)
        .map_err(|problem| ConfigError(vec![problem]))?;
    let root_origin = Origin {
        file: Arc::clone(&root),
        path: Vec::new(),
    };
    let main: MeshFileConfig =
        decode(value).map_err(|e| ConfigError(vec![root_origin.decode_problem(e)]))?;
    if main.version != MESH_FILE_VERSION {
        return Err(ConfigError(vec![
            root.problem(
                &["version".into()],
                format!("unsupported mesh file version {}", main.version),
            )
            .with_help(format!("this meshql reads `version: {MESH_FILE_VERSION}`")),
        ]));
    }
    let access = match main.access {
        None => None,
        Some(value) => Some(decode_access(&root_origin, value, &loader.missing)?),
    };
    loader.add_entities(&root_origin, main.sources, main.domains);
    loader.include(&root_origin, &main.include);
    loader.report_unclaimed_missing();

    Ok(MeshSpec {
        root,
        files: loader.files,
        sources: loader.sources,
        domains: loader.domains,
        problems: loader.problems,
        access,
    })
}

/// Decode `access:`; any problem in it is fatal (never fall back to open mode).
fn decode_access(
    root: &Origin,
    value: Value,
    missing: &[(Arc<MeshFile>, MissingVar)],
) -> Result<AccessConfig> {
    let origin = root.child("access");
    if let Some((file, m)) = missing
        .iter()
        .find(|(_, m)| m.path.starts_with(&origin.path))
    {
        return Err(ConfigError(vec![
            file.problem(&m.path, m.message.clone())
                .with_subject("access")
                .with_help("export the variable before starting meshql"),
        ]));
    }
    let access: AccessConfig = decode(value)
        .map_err(|e| ConfigError(vec![origin.decode_problem(e).with_subject("access")]))?;
    for (name, user) in &access.users {
        user.validate().map_err(|m| {
            ConfigError(vec![
                origin
                    .child("users")
                    .child(name)
                    .problem(m)
                    .with_subject(format!("user `{name}`")),
            ])
        })?;
    }
    Ok(access)
}

struct Loader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    sources: BTreeMap<String, SourceSpec>,
    domains: BTreeMap<String, DomainSpec>,
    files: Vec<Arc<MeshFile>>,
    /// Unresolved `${env:VAR}`s, reported by the entity that contains them.
    missing: Vec<(Arc<MeshFile>, MissingVar)>,
}

impl Loader<'_> {
    /// Read, parse and interpolate one file. Variables that are missing become problems
    /// of the entity that uses them (see `missing_under`).
    fn read_file(&mut self, path: &Path) -> std::result::Result<(Arc<MeshFile>, Value), Problem> {
        let at_start = Position { line: 1, column: 1 };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problem::new(path, at_start, format!("cannot read mesh file: {e}")))?;
        let spans = SpanIndex::build(&text);
        if let Some((key, first, second)) = spans.duplicates.first() {
            let (name, parent) = key
                .split_last()
                .map(|(n, p)| (n.clone(), p.join(".")))
                .unwrap_or_default();
            let within = if parent.is_empty() {
                String::from("the top level")
            } else {
                format!("`{parent}`")
            };
            return Err(Problem::new(
                path,
                *second,
                format!(
                    "`{name}` is declared twice in {within} (first at line {})",
                    first.line
                ),
            )
            .with_help("names must be unique; rename or remove one of them"));
        }
        let mut value: Value = serde_yaml::from_str(&text).map_err(|e| {
            let position = e
                .location()
                .map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or(at_start);
            Problem::new(
                path,
                position,
                format!("invalid YAML: {}", strip_location(&e.to_string())),
            )
        })?;
        if value.is_null() {
            value = Value::Mapping(Default::default());
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let file = Arc::new(MeshFile {
            path: path.to_path_buf(),
            dir,
            spans,
        });
        let mut missing = Vec::new();
        interpolate(&mut value, &mut Vec::new(), self.lookup, &mut missing);
        self.files.push(Arc::clone(&file));
        self.missing
            .extend(missing.into_iter().map(|m| (Arc::clone(&file), m)));
        Ok((file, value))
    }

    fn include(&mut self, root: &Origin, globs: &[String]) {
        let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        let mut seen: Vec<PathBuf> = vec![canonical(&root.file.path)];
        for (i, pattern) in globs.iter().enumerate() {
            let at = root.child("include").child(&i.to_string());
            let full = root.file.dir.join(pattern);
            let paths = match glob::glob(&full.to_string_lossy()) {
                Ok(paths) => paths,
                Err(e) => {
                    self.problems
                        .push(at.problem(format!("invalid include glob `{pattern}`: {e}")));
                    continue;
                }
            };
            let mut matched = 0;
            for entry in paths {
                let path = match entry {
                    Ok(path) => path,
                    Err(e) => {
                        self.problems.push(at.problem(format!("cannot read {e}")));
                        continue;
                    }
                };
                matched += 1;
                if canonical(&path) == seen[0] && !pattern.contains(['*', '?', '[']) {
                    // A glob that also matches the main file (`*.yaml`) is fine; naming it
                    // is a mistake (its domains would be read twice).
                    self.problems.push(
                        at.problem(format!("`{pattern}` is the main mesh file itself"))
                            .with_help("list only domain files under `include:`"),
                    );
                    continue;
                }
                if seen.contains(&canonical(&path)) {
                    continue;
                }
                seen.push(canonical(&path));
                match self.read_file(&path) {
                    Ok((file, value)) => {
                        let origin = Origin {
                            file,
                            path: Vec::new(),
                        };
                        match decode::<DomainFileConfig>(value) {
                            Ok(cfg) => self.add_entities(&origin, cfg.sources, cfg.domains),
                            Err(e) => {
                                let only = e.message.starts_with("unknown key");
                                let mut problem = origin.decode_problem(e);
                                if only {
                                    problem = problem.with_help(
                                        "an included file may only declare `sources:` and `domains:`; \
                                         `version`, `include` and `access` belong in the main mesh file",
                                    );
                                }
                                self.problems.push(problem);
                            }
                        }
                    }
                    Err(problem) => self.problems.push(problem),
                }
            }
            if matched == 0 {
                self.problems.push(
                    at.problem(format!(
                        "include glob `{pattern}` matches no file (looked for {})",
                        full.display()
                    ))
                    .with_help(
                        "fix the pattern (it is relative to the main mesh file) or remove it",
                    ),
                );
            }
        }
    }

    fn add_entities(
        &mut self,
        file: &Origin,
        sources: BTreeMap<String, Value>,
        domains: BTreeMap<String, Value>,
    ) {
        let sources_origin = file.child("sources");
        for (name, value) in sources {
            let origin = sources_origin.child(&name);
            if let Some(existing) = self.sources.get(&name) {
                self.problems
                    .push(duplicate("source", &name, &origin, &existing.origin));
                continue;
            }
            let config = check_name("source", &name)
                .map_err(|m| origin.problem(m))
                .and_then(|()| self.missing_under(&origin))
                .and_then(|()| decode::<SourceConfig>(value).map_err(|e| origin.decode_problem(e)))
                .map_err(|p| p.with_subject(format!("source `{name}`")));
            self.sources.insert(
                name.clone(),
                SourceSpec {
                    name,
                    origin,
                    config,
                },
            );
        }

        let domains_origin = file.child("domains");
        for (name, value) in domains {
            let origin = domains_origin.child(&name);
            if let Some(existing) = self.domains.get(&name) {
                self.problems
                    .push(duplicate("domain", &name, &origin, &existing.origin));
                continue;
            }
            if let Some(domain) = self.domain(name.clone(), origin, value) {
                self.domains.insert(name, domain);
            }
        }
    }

    fn domain(&mut self, name: String, origin: Origin, value: Value) -> Option<DomainSpec> {
        let subject = format!("domain `{name}`");
        if RESERVED_CATALOGS.contains(&name.as_str()) {
            self.problems.push(
                origin
                    .problem(format!("the name `{name}` is reserved by meshql"))
                    .with_subject(subject)
                    .with_help("rename the domain"),
            );
            return None;
        }
        if let Err(m) = check_name("domain", &name) {
            self.problems.push(origin.problem(m).with_subject(subject));
            return None;
        }
        let mut config: DomainConfig = match decode(value) {
            Ok(c) => c,
            Err(e) => {
                self.problems
                    .push(origin.decode_problem(e).with_subject(subject));
                return None;
            }
        };
        let products_origin = origin.child("products");
        let mut products = BTreeMap::new();
        for (product, value) in std::mem::take(&mut config.products) {
            let p_origin = products_origin.child(&product);
            let p_subject = format!("data product `{name}.{product}`");
            if let Err(m) = check_name("data product", &product) {
                self.problems
                    .push(p_origin.problem(m).with_subject(p_subject));
                continue;
            }
            let mut p_config: ProductConfig = match decode(value) {
                Ok(c) => c,
                Err(e) => {
                    self.problems
                        .push(p_origin.decode_problem(e).with_subject(p_subject));
                    continue;
                }
            };
            let ports_origin = p_origin.child("output_ports");
            let mut ports = BTreeMap::new();
            for (port, value) in std::mem::take(&mut p_config.output_ports) {
                let port_name = PortName {
                    domain: name.clone(),
                    product: product.clone(),
                    port: port.clone(),
                };
                let spec = self.port(port_name, ports_origin.child(&port), value);
                ports.insert(port, spec);
            }
            products.insert(
                product.clone(),
                ProductSpec {
                    name: product,
                    origin: p_origin,
                    config: p_config,
                    ports,
                },
            );
        }
        Some(DomainSpec {
            name,
            origin,
            config,
            products,
        })
    }

    fn port(&mut self, name: PortName, origin: Origin, value: Value) -> PortSpec {
        let subject = format!("output port `{name}`");
        let config = check_name("output port", &name.port)
            .map_err(|m| origin.problem(m))
            .and_then(|()| self.missing_under(&origin))
            .and_then(|()| decode::<PortConfig>(value).map_err(|e| origin.decode_problem(e)))
            .and_then(|config| validate_port_shape(&origin, config))
            .map_err(|p| p.with_subject(subject));
        PortSpec {
            name,
            origin,
            config,
        }
    }

    /// Missing variables outside sources and ports (which report their own, and become
    /// unavailable) are reported here: a description, an owner.
    fn report_unclaimed_missing(&mut self) {
        for (file, m) in &self.missing {
            let p = &m.path;
            let in_source = p.len() >= 2 && p[0] == "sources";
            let in_port =
                p.len() >= 6 && p[0] == "domains" && p[2] == "products" && p[4] == "output_ports";
            if !in_source && !in_port {
                self.problems.push(
                    file.problem(p, m.message.clone())
                        .with_help("export the variable before starting meshql"),
                );
            }
        }
    }

    /// The first missing `${env:VAR}` inside the entity at `origin`, as its problem.
    fn missing_under(&self, origin: &Origin) -> std::result::Result<(), Problem> {
        match self
            .missing
            .iter()
            .find(|(file, m)| Arc::ptr_eq(file, &origin.file) && m.path.starts_with(&origin.path))
        {
            Some((file, m)) => Err(file
                .problem(&m.path, m.message.clone())
                .with_help("export the variable before starting meshql")),
            None => Ok(()),
        }
    }
}

/// A port reads a `source` or is derived by `sql`, never both.
fn validate_port_shape(
    origin: &Origin,
    config: PortConfig,
) -> std::result::Result<PortConfig, Problem> {
    match (&config.source, &config.sql) {
        (Some(_), Some(_)) => Err(origin
            .problem_at(&["sql".into()], "a port has either `source:` or `sql:`, not both")
            .with_help("remove `sql:` to read the source, or `source:` to derive the port from other ports")),
        (None, None) => Err(origin
            .problem("the port has neither `source:` nor `sql:`")
            .with_help("add `source: NAME` (plus `format` and `path` for lake sources), or `sql: SELECT ...` for a derived port")),
        (None, Some(_)) if config.cache.is_some() => Err(origin
            .problem_at(&["cache".into()], "`cache` applies to ports that read a source")
            .with_help("a derived port is planned over its inputs on every query; cache the ports it reads instead")),
        (None, Some(_)) => match config.location.keys().next() {
            Some(key) => {
                let key = super::interpolate::key_string(key);
                Err(origin
                    .problem_at(std::slice::from_ref(&key), format!("unknown key `{key}` for a derived (`sql:`) port"))
                    .with_help("derived ports take `sql`, `description`, `tags` and `columns` only"))
            }
            None => Ok(config),
        },
        (Some(_), None) if config.cache.as_ref().is_some_and(|c| c.max_mb == 0) => Err(origin
            .problem_at(&["cache".into(), "max_mb".into()], "`max_mb` must be at least 1")
            .with_help("remove `cache:` to read the source on every query")),
        (Some(_), None) => Ok(config),
    }
}

/// Names become unquoted SQL identifiers, which DataFusion lowercases: accept only names
/// that read the same quoted or not.
fn check_name(what: &str, name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name `{name}`: use lowercase letters, digits and `_`, starting with a letter, \
             so the name can be written in SQL without quotes"
        ))
    }
}

fn duplicate(what: &str, name: &str, origin: &Origin, existing: &Origin) -> Problem {
    let first = existing.position();
    origin
        .problem(format!(
            "{what} `{name}` is declared twice: here and in {}:{}:{}",
            existing.file.path.display(),
            first.line,
            first.column
        ))
        .with_subject(format!("{what} `{name}`"))
        .with_help(format!(
            "each {what} is declared in exactly one file; rename or remove one of them"
        ))
}

/// serde_yaml appends " at line L column C" to messages; we print the position ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
