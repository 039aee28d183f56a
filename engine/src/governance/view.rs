//! What one identity may read: for every output port, hidden, raw, or governed by row
//! filters and column masks. Computed once per identity and cached, so planning a
//! statement only looks names up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::Result as DFResult;
use tokio::sync::OnceCell;

use super::Governance;
use super::expr::PolicyExpr;
use super::identity::Identity;
use super::policies::Policies;
use super::table::GovernedTable;
use crate::mesh::MeshRegistry;
use meshql_config::PortName;

/// The policy one identity reads a port under.
#[derive(Debug, Clone, Default)]
pub struct PortPolicy {
    /// AND-ed, in rule order.
    pub filters: Vec<PolicyExpr>,
    /// Column -> the one mask that applies (tag policies first, then rules in order).
    pub masks: BTreeMap<String, PolicyExpr>,
    /// Why the port is visible, for `mesh.meta.grants`.
    pub granted_by: Vec<String>,
}

impl PortPolicy {
    pub fn is_raw(&self) -> bool {
        self.filters.is_empty() && self.masks.is_empty()
    }
}

/// A visible port, with its governed table planned on first use.
#[derive(Debug)]
pub struct Visible {
    pub policy: PortPolicy,
    /// Derived ports are always read through the opaque leaf, even without a policy:
    /// inlined, the user's predicates would run below the view's own filters and joins,
    /// on rows read with the owner's rights (and EXPLAIN would show the inputs).
    derived: bool,
    governed: OnceCell<Arc<GovernedTable>>,
}

#[derive(Debug)]
pub struct AccessView {
    pub identity: Identity,
    /// Sees everything unfiltered (admins, and everyone in open mode).
    pub unrestricted: bool,
    /// Admin of a governed mesh: also sees the whole audit log and all grants.
    pub admin: bool,
    ports: HashMap<PortName, Visible>,
}

impl AccessView {
    /// Open mode: no `access:` section.
    pub fn open(identity: Identity) -> Self {
        AccessView {
            identity,
            unrestricted: true,
            admin: false,
            ports: HashMap::new(),
        }
    }

    pub fn compute(policies: &Policies, registry: &MeshRegistry, identity: Identity) -> Self {
        if policies.is_admin(&identity) {
            return AccessView {
                identity,
                unrestricted: true,
                admin: true,
                ports: HashMap::new(),
            };
        }
        let rules: Vec<_> = policies
            .rules
            .iter()
            .filter(|r| r.applies_to(&identity))
            .collect();
        let mut ports = HashMap::new();
        for (domain, entry) in registry.ports() {
            let name = &entry.info.name;
            let mut granted_by = Vec::new();
            if let Some(owner) = &domain.owner
                && identity.is_member(owner)
            {
                granted_by.push(format!("owner of domain {}", domain.name));
            }
            for rule in &rules {
                if rule.allow.iter().any(|(p, _)| p.matches(name)) {
                    granted_by.push(format!("rule {}", rule.number));
                }
            }
            let denied = rules
                .iter()
                .any(|r| r.deny.iter().any(|(p, _)| p.matches(name)));
            if granted_by.is_empty() || denied {
                continue;
            }
            let mut policy = PortPolicy {
                granted_by,
                ..PortPolicy::default()
            };
            for rule in &rules {
                for (port, filter) in &rule.row_filters {
                    if port == name {
                        policy.filters.push(filter.clone());
                    }
                }
            }
            for (column, doc) in &entry.info.columns {
                let tag_mask = policies.tag_policies.iter().find(|t| {
                    doc.tags.contains(&t.tag) && !t.unless.iter().any(|p| p.matches(&identity))
                });
                if let Some(t) = tag_mask {
                    policy.masks.insert(column.clone(), t.mask.clone());
                }
            }
            for rule in &rules {
                for (port, column, mask) in &rule.column_masks {
                    if port == name && !policy.masks.contains_key(column) {
                        policy.masks.insert(column.clone(), mask.clone());
                    }
                }
            }
            ports.insert(
                name.clone(),
                Visible {
                    policy,
                    derived: entry.info.kind == crate::mesh::port::PortKind::Derived,
                    governed: OnceCell::new(),
                },
            );
        }
        AccessView {
            identity,
            unrestricted: false,
            admin: false,
            ports,
        }
    }

    pub fn can_read(&self, port: &PortName) -> bool {
        self.unrestricted || self.ports.contains_key(port)
    }

    /// The policy for a visible port (`None`: hidden). Unrestricted views read raw.
    pub fn policy(&self, port: &PortName) -> Option<PortPolicy> {
        if self.unrestricted {
            return Some(PortPolicy::default());
        }
        self.ports.get(port).map(|v| v.policy.clone())
    }

    /// Every port this view can see with its policy (not for unrestricted views).
    pub fn visible(&self) -> impl Iterator<Item = (&PortName, &PortPolicy)> {
        self.ports.iter().map(|(n, v)| (n, &v.policy))
    }

    /// The table a statement reads for `port`: `raw` itself, or `raw` behind this
    /// view's row filters and masks (planned once per view and port).
    pub async fn table_for(
        &self,
        governance: &Governance,
        port: &PortName,
        raw: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if self.unrestricted {
            return Ok(Some(raw));
        }
        let Some(visible) = self.ports.get(port) else {
            return Ok(None);
        };
        if visible.policy.is_raw() && !visible.derived {
            return Ok(Some(raw));
        }
        let table = visible
            .governed
            .get_or_try_init(|| async {
                GovernedTable::plan(governance, port, raw, &visible.policy, &self.identity)
                    .await
                    .map(Arc::new)
            })
            .await?;
        Ok(Some(Arc::clone(table) as Arc<dyn TableProvider>))
    }
}
