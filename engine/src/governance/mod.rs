//! Federated computational governance: who may read which output port, under which row
//! filters and column masks, and the audit of every statement.
//!
//! Policies are applied where names are resolved, before any optimizer runs: each
//! statement plans against catalogs built for its identity ([`catalog`]), in which a
//! port is absent, raw, or a [`table::GovernedTable`] that wraps the port in its policy.
//! Every path that plans SQL (embedded, Flight SQL statements and prepared statements,
//! metadata RPCs, the REPL) goes through [`Governance::session_state`].

pub mod audit;
pub mod catalog;
pub mod expr;
pub mod identity;
pub mod leakproof;
pub mod meta;
pub mod pattern;
pub mod policies;
pub mod settings;
pub mod table;
pub mod token;
mod validate;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

pub use identity::{Identity, Principal};
pub use policies::Policies;

use audit::AuditLog;
use catalog::{Denials, SecuredCatalogList};
use meta::{GovernanceMetaTable, GovernanceTable};
use view::AccessView;

use crate::mesh::MeshRegistry;
use crate::mesh::meta::{MetaCatalog, Visibility};
use crate::problem::Problem;

/// Identities whose views are kept; beyond this the cache starts over.
const CACHED_VIEWS: usize = 1024;

pub struct Governance {
    policies: Option<Arc<Policies>>,
    registry: Arc<MeshRegistry>,
    /// The platform's session: raw catalogs. Plans policies; template of user sessions.
    base: SessionState,
    audit: AuditLog,
    views: Mutex<HashMap<Identity, Arc<AccessView>>>,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("governed", &self.policies.is_some())
            .field("audit_log", &self.audit.path())
            .finish_non_exhaustive()
    }
}

impl Governance {
    pub fn new(
        policies: Option<Arc<Policies>>,
        registry: Arc<MeshRegistry>,
        base: SessionState,
    ) -> Self {
        let audit = AuditLog::open(policies.as_ref().and_then(|p| p.audit_log.clone()));
        Governance {
            policies,
            registry,
            base,
            audit,
            views: Mutex::new(HashMap::new()),
        }
    }

    /// `None`: open mode, everyone reads everything.
    pub fn policies(&self) -> Option<&Policies> {
        self.policies.as_deref()
    }

    pub fn shared_registry(&self) -> Arc<MeshRegistry> {
        Arc::clone(&self.registry)
    }

    pub fn registry(&self) -> &MeshRegistry {
        &self.registry
    }

    /// The platform's rights: for planning policies and checking the mesh.
    pub fn planner(&self) -> &SessionState {
        &self.base
    }

    pub fn raw_catalogs(&self) -> Arc<dyn CatalogProviderList> {
        Arc::clone(self.base.catalog_list())
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// What `identity` may read (cached per identity: the rules are fixed at load).
    pub fn view(&self, identity: &Identity) -> Arc<AccessView> {
        let Some(policies) = &self.policies else {
            return Arc::new(AccessView::open(identity.clone()));
        };
        if let Ok(views) = self.views.lock()
            && let Some(view) = views.get(identity)
        {
            return Arc::clone(view);
        }
        let view = Arc::new(AccessView::compute(
            policies,
            &self.registry,
            identity.clone(),
        ));
        if let Ok(mut views) = self.views.lock() {
            if views.len() >= CACHED_VIEWS {
                views.clear();
            }
            views.insert(identity.clone(), Arc::clone(&view));
        }
        view
    }

    /// A session state for `identity`: its catalogs, `current_user()` and
    /// `is_member()`. Names of ports it may not read are recorded in `denials`.
    pub fn session_state(self: &Arc<Self>, identity: &Identity, denials: Denials) -> SessionState {
        let view = self.view(identity);
        let visible: Option<Visibility> = if view.unrestricted {
            None
        } else {
            let v = Arc::clone(&view);
            Some(Arc::new(move |p| v.can_read(p)))
        };
        let extra = GovernanceTable::ALL
            .into_iter()
            .map(|kind| {
                let table: Arc<dyn TableProvider> = Arc::new(GovernanceMetaTable::new(
                    kind,
                    Arc::clone(self),
                    Arc::clone(&view),
                ));
                (kind.name().to_string(), table)
            })
            .collect();
        let meta: Arc<dyn CatalogProvider> = Arc::new(MetaCatalog::filtered(
            Arc::clone(&self.registry),
            visible,
            extra,
        ));
        let catalogs = SecuredCatalogList {
            governance: Arc::clone(self),
            view,
            meta,
            denials,
        };
        // Sources that pass the end user on read who it is from here. Only a governed
        // mesh has checked who that is: in open mode any name may be claimed.
        // A clone of the base state, not a rebuild: `SessionStateBuilder::build` registers
        // every built-in function again (with its aliases and the config), a large part
        // of the server's CPU for a `SELECT 1` (each Flight SQL statement makes three
        // sessions; figures:
        // docs/benchmarks/log.md#2026-12-04-sessions-as-clones-of-the-base-state-kept).
        // Neither change below touches what functions derive from.
        let mut state = self.base.clone();
        state.register_catalog_list(Arc::new(catalogs));
        if self.policies.is_some() {
            state.config_mut().set_extension(Arc::new(identity.clone()));
        }
        for udf in identity_functions(identity) {
            // Replaces the previous registration, never fails.
            let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, udf);
        }
        state
    }

    /// Problems of the access rules that need the ports: unknown ports and columns,
    /// expressions that do not plan, have the wrong type or read their own port.
    pub async fn validate(&self) -> Vec<Problem> {
        validate::validate(self).await
    }
}

/// `current_user()` and `is_member('group')` for the statement's identity.
fn identity_functions(identity: &Identity) -> Vec<Arc<ScalarUDF>> {
    let user = identity.user.clone();
    let current_user = create_udf(
        "current_user",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user.clone()))))),
    );
    let groups = identity.groups.clone();
    let is_member = create_udf(
        "is_member",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(move |args| {
            let member = |g: Option<&str>| g.map(|g| groups.iter().any(|x| x == g));
            match &args[0] {
                ColumnarValue::Scalar(
                    ScalarValue::Utf8(g) | ScalarValue::Utf8View(g) | ScalarValue::LargeUtf8(g),
                ) => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(member(
                    g.as_deref(),
                )))),
                ColumnarValue::Array(a) => {
                    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                    let strings = a.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Execution(
                            "is_member takes a group name".into(),
                        )
                    })?;
                    let out: BooleanArray = strings.iter().map(member).collect();
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
                _ => Err(datafusion::error::DataFusionError::Execution(
                    "is_member takes a group name".into(),
                )),
            }
        }),
    );
    vec![Arc::new(current_user), Arc::new(is_member)]
}
