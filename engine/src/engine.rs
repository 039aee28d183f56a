//! [`MeshEngine`]: a loaded mesh with its governance. Statements run in a
//! [`MeshSession`] for one identity; the engine's own context has the platform's
//! rights and is used for checking the mesh, never for users' statements.

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;

use crate::admission::{Admission, AdmissionOptions};
use crate::config::MeshSpec;
use crate::config::access::AccessConfig;
use crate::config::load_mesh;
use crate::connector::ConnectorRegistry;
use crate::error::Result;
use crate::federation::MeshQueryPlanner;
use crate::governance::catalog::Denials;
use crate::governance::{Governance, Identity};
use crate::limits::StatementLimits;
use crate::mesh::derived::plan_derived_ports;
use crate::mesh::meta::{META_CATALOG, META_SCHEMA};
use crate::mesh::port::PortKind;
use crate::mesh::{MeshRegistry, register_mesh};
use crate::optimizer::MeshqlOptions;
use crate::problem::Problem;
use crate::session::MeshSession;

/// Process-level settings of an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Bytes all running queries may use together (None = unbounded).
    pub memory_limit: Option<usize>,
    /// Send remote sources single-table statements only: joins, aggregates and sorts
    /// over their tables run here. For comparisons, and an escape hatch.
    pub no_subplan_pushdown: bool,
    /// Joins do not pass their build-side keys to the probe side's scan. For comparisons.
    pub no_dynamic_filters: bool,
    /// Compute a subplan that occurs more than once (a CTE read twice) at each
    /// occurrence. For comparisons.
    pub no_shared_subplans: bool,
    /// Bounds on the size and nesting of one statement.
    pub statement_limits: StatementLimits,
    /// Statement timeout and how many statements run at once.
    pub admission: AdmissionOptions,
    /// Session settings every session starts with, as `SET` takes them
    /// (`meshql.like_by_segments` = `false`); applied after the flags above.
    pub settings: Vec<(String, String)>,
}

pub struct MeshEngine {
    ctx: SessionContext,
    registry: Arc<MeshRegistry>,
    access: Option<AccessConfig>,
    governance: Arc<Governance>,
    /// Access rule problems found when the mesh loaded.
    policy_problems: Vec<Problem>,
    statement_limits: StatementLimits,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for MeshEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshEngine")
            .field("registry", &self.registry)
            .finish()
    }
}

impl MeshEngine {
    /// Load the mesh file at `path` and open every port. Fails only if the main file
    /// cannot be used; broken ports are reported by [`MeshEngine::problems`] and fail
    /// only the queries that read them.
    pub async fn open(path: &Path, connectors: &ConnectorRegistry) -> Result<Self> {
        Self::open_with(path, connectors, &EngineOptions::default()).await
    }

    pub async fn open_with(
        path: &Path,
        connectors: &ConnectorRegistry,
        options: &EngineOptions,
    ) -> Result<Self> {
        let spec = load_mesh(path)?;
        Ok(Self::from_spec_with(spec, connectors, options).await)
    }

    pub async fn from_spec(spec: MeshSpec, connectors: &ConnectorRegistry) -> Self {
        Self::from_spec_with(spec, connectors, &EngineOptions::default()).await
    }

    /// Like [`MeshEngine::from_spec`], with process-level options.
    pub async fn from_spec_with(
        spec: MeshSpec,
        connectors: &ConnectorRegistry,
        options: &EngineOptions,
    ) -> Self {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit {
            // Fair among concurrent queries; operators that can spill do, the others fail
            // with "resources exhausted" instead of taking the process down.
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let runtime = match runtime.build_arc() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the configured runtime; using defaults");
                Arc::new(RuntimeEnv::default())
            }
        };
        let mut config = Self::session_config();
        let meshql = config
            .options_mut()
            .extensions
            .get_mut::<MeshqlOptions>()
            .expect("session_config registers meshql's settings");
        meshql.shared_subplans = !options.no_shared_subplans;
        meshql.subplan_pushdown = !options.no_subplan_pushdown;
        for (key, value) in &options.settings {
            if let Err(e) = config.options_mut().set(key, value) {
                tracing::warn!(%key, %value, error = %e, "ignoring a session setting default");
            }
        }
        if options.no_dynamic_filters {
            config
                .options_mut()
                .optimizer
                .enable_join_dynamic_filter_pushdown = false;
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rules(crate::optimizer::physical_rules())
            .with_query_planner(Arc::new(MeshQueryPlanner))
            .build();
        let mut state = state;
        if let Err(e) = crate::bounded::install(&mut state) {
            tracing::warn!(error = %e, "cannot bound the functions that build large values");
        }
        let ctx = SessionContext::new_with_state(state);
        let access = spec.access.clone();
        let policies = spec.policies.clone();
        let registry = register_mesh(spec.declared, connectors, &ctx).await;
        let governance = Arc::new(Governance::new(
            policies,
            Arc::clone(&registry),
            ctx.state(),
        ));
        // Derived ports read their inputs with their owner group's rights.
        let governed = governance.policies().is_some();
        let definer = |port: &crate::mesh::port::PortEntry| {
            if !governed {
                return Ok(ctx.state());
            }
            let owner = registry
                .domains
                .get(&port.info.name.domain)
                .and_then(|d| d.owner.clone())
                .ok_or_else(|| {
                    "a derived port reads with its domain owner's rights, and this domain has no `owner`"
                        .to_string()
                })?;
            let denials: Denials = Default::default();
            Ok(governance.session_state(&Identity::owner_group(&owner), denials))
        };
        plan_derived_ports(&registry.derived_ports(), &ctx.state(), &definer).await;
        let policy_problems = governance.validate().await;
        MeshEngine {
            ctx,
            registry,
            access,
            governance,
            policy_problems,
            statement_limits: options.statement_limits,
            admission: Arc::new(Admission::new(options.admission)),
        }
    }

    /// A session for `identity`: the mesh as it may see it.
    pub fn session(&self, identity: &Identity) -> MeshSession {
        MeshSession::new(
            &self.governance,
            identity,
            self.statement_limits,
            Arc::clone(&self.admission),
        )
    }

    /// Statement admission: what runs now, the timeout, shutdown.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// True when the mesh has access rules (an `access:` section).
    pub fn is_governed(&self) -> bool {
        self.governance.policies().is_some()
    }

    pub fn governance(&self) -> &Arc<Governance> {
        &self.governance
    }

    /// The `access:` section, if the mesh has one (no section = open mode).
    pub fn access(&self) -> Option<&AccessConfig> {
        self.access.as_ref()
    }

    /// Session defaults: information_schema on; unqualified names resolve in `mesh.meta`;
    /// no `datafusion.public` catalog beside the domains.
    pub fn session_config() -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(META_CATALOG, META_SCHEMA)
            .with_option_extension(MeshqlOptions::default());
        // A join's build-side keys reach the probe side as an IN list up to this many
        // (beyond it only their range); DataFusion's default is 150. Much longer lists
        // cost lake scans more than they skip (figures:
        // docs/benchmarks/log.md#2026-11-22-longer-key-lists-for-every-join-not-kept).
        // Joins probed by a remote statement get longer lists (federation/key_lists.rs).
        config
            .options_mut()
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 4096;
        // Hash joins whose build side is estimated below these collect it whole and
        // share it, rather than hash-partitioning both sides. DataFusion's defaults
        // (1 MB, 128K rows) repartition the 6M-row probe side of most TPC-H joins; with
        // few cores that shuffle costs more than it spreads (figures:
        // docs/benchmarks/log.md#2026-11-21-hash-joins-collect-small-build-sides-kept).
        // Larger builds still partition.
        // The parser's own bound on nesting (parentheses, subqueries, prefix operators):
        // DataFusion's 50 refuses 40 nested subqueries, which BI tools do write. Statements
        // run on large stacks (crate::limits), which hold this much nesting.
        if let Ok(limit) = datafusion::config::ConfigNonZeroUsize::try_new(256) {
            config.options_mut().sql_parser.recursion_limit = limit;
        }
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = 64 << 20;
        optimizer.hash_join_single_partition_threshold_rows = 2_000_000;
        // A join on one integer key whose build-side keys span under 8M values looks rows
        // up by key in an array (4 bytes a value, at most 32 MiB, counted against the
        // memory pool) instead of hashing them. DataFusion's default span is 1024 (or keys
        // at least 15% dense): TPC-H Q17 probed the hash table of 204 parts, spread over
        // 200K part keys, with all 6M lineitem rows; Q4 and Q5 a quarter's orders, spread
        // over 6M order keys. Figures:
        // docs/benchmarks/log.md#2026-12-04-joins-look-keys-up-in-an-array-below-a-span-of-8m-kept
        config
            .options_mut()
            .execution
            .perfect_hash_join_small_build_threshold = 1 << 23;
        config
    }

    /// The platform's context: every port, no policy. Not for users' statements.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn registry(&self) -> &Arc<MeshRegistry> {
        &self.registry
    }

    /// Plan one read-only statement as the anonymous user (who, in a governed mesh,
    /// sees nothing). Output ports are data products owned by their domains: DDL and
    /// DML are refused.
    pub async fn sql(&self, sql: &str) -> Result<crate::session::Planned> {
        self.session(&Identity::anonymous()).plan(sql).await
    }

    /// Problems known now: declaration problems and ports that cannot be read.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = self.registry.problems.clone();
        problems.extend(self.registry.port_problems());
        problems.extend(self.registry.column_problems());
        problems.extend(self.policy_problems.iter().cloned());
        sort(&mut problems);
        problems
    }

    /// Everything [`MeshEngine::problems`] reports, plus a read of the first rows of
    /// every available source port, proving its data is reachable and decodes.
    pub async fn check(&self) -> Vec<Problem> {
        let mut problems = self.problems();
        for (_, port) in self.registry.ports() {
            if port.info.kind != PortKind::Source {
                continue;
            }
            let Some(table) = port.table() else { continue };
            let read = async {
                self.ctx
                    .read_table(table)?
                    .limit(0, Some(1))?
                    .collect()
                    .await
            };
            if let Err(e) = read.await {
                problems.push(
                    port.info
                        .origin
                        .problem(format!("cannot read its data: {}", crate::Error::from(e)))
                        .with_subject(format!("output port `{}`", port.info.name)),
                );
            }
        }
        sort(&mut problems);
        problems
    }
}

fn sort(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        (&a.file, a.position.line, a.position.column).cmp(&(
            &b.file,
            b.position.line,
            b.position.column,
        ))
    });
}
