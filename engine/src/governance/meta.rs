//! `mesh.meta.query_log` (the audit log: admins see all of it, everyone else their own
//! statements) and `mesh.meta.grants` (effective grants per user and port: admins see
//! all, with expressions; users see their own rows, without them).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::Governance;
use super::audit::{Decision, Denial};
use super::identity::Identity;
use super::view::AccessView;
use crate::mesh::meta::{scan_batch, tag_lists};

#[derive(Debug, Clone, Copy)]
pub enum GovernanceTable {
    QueryLog,
    Grants,
}

impl GovernanceTable {
    pub const ALL: [GovernanceTable; 2] = [GovernanceTable::QueryLog, GovernanceTable::Grants];

    pub fn name(self) -> &'static str {
        match self {
            GovernanceTable::QueryLog => "query_log",
            GovernanceTable::Grants => "grants",
        }
    }

    fn schema(self) -> SchemaRef {
        let s = |n: &str| Field::new(n, DataType::Utf8, true);
        let list = |n: &str| {
            Field::new(
                n,
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            )
        };
        Arc::new(Schema::new(match self {
            GovernanceTable::QueryLog => vec![
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
                s("query_id"),
                s("user"),
                s("statement"),
                list("ports"),
                s("decision"),
                s("reason"),
                Field::new("rows", DataType::UInt64, true),
                Field::new("duration_ms", DataType::Float64, true),
                s("error"),
                s("status"),
                s("statement_sha256"),
            ],
            GovernanceTable::Grants => vec![
                s("principal"),
                s("port"),
                s("row_filter"),
                list("column_masks"),
                s("granted_by"),
            ],
        }))
    }
}

#[derive(Debug)]
pub struct GovernanceMetaTable {
    kind: GovernanceTable,
    schema: SchemaRef,
    governance: Arc<Governance>,
    view: Arc<AccessView>,
}

impl GovernanceMetaTable {
    pub fn new(kind: GovernanceTable, governance: Arc<Governance>, view: Arc<AccessView>) -> Self {
        GovernanceMetaTable {
            kind,
            schema: kind.schema(),
            governance,
            view,
        }
    }

    /// Admins of a governed mesh and everyone in open mode see everything.
    fn sees_all(&self) -> bool {
        self.view.admin || self.governance.policies().is_none()
    }

    fn query_log(&self) -> DFResult<Vec<ArrayRef>> {
        let sees_all = self.sees_all();
        let me = &self.view.identity.user;
        let mut records = self
            .governance
            .audit()
            .recent(&|r| sees_all || r.user == *me)
            .map_err(DataFusionError::Execution)?;
        if !self.sees_all() {
            // A statement that named a hidden port reads like one that named a port that
            // does not exist: no decision, reason or port names. Records of older versions
            // carry no `denial`: any denial of theirs is treated so.
            for r in &mut records {
                let other = matches!(r.denial, Some(Denial::Statement | Denial::SignIn));
                if r.decision == Decision::Denied && !other {
                    r.decision = Decision::Allowed;
                    r.denial = None;
                    r.reason = None;
                    r.ports.clear();
                }
            }
        }
        let s = |f: &dyn Fn(&super::audit::AuditRecord) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(records.iter().map(f).collect::<Vec<_>>()))
        };
        let time = cast(
            &s(&|r| Some(r.time.clone())),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )?;
        Ok(vec![
            time,
            s(&|r| Some(r.query_id.clone())),
            s(&|r| Some(r.user.clone())),
            s(&|r| Some(r.statement.clone())),
            tag_lists(records.iter().map(|r| r.ports.clone()).collect()),
            s(&|r| Some(r.decision.as_str().to_string())),
            s(&|r| r.reason.clone()),
            Arc::new(UInt64Array::from(
                records.iter().map(|r| r.rows).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                records
                    .iter()
                    .map(|r| Some(r.duration_ms))
                    .collect::<Vec<_>>(),
            )),
            s(&|r| r.error.clone()),
            s(&|r| Some(r.status.as_str().to_string())),
            s(&|r| Some(r.statement_sha256.clone())),
        ])
    }

    fn grants(&self) -> Vec<ArrayRef> {
        let (mut principal, mut port, mut filter, mut masks, mut by) =
            (vec![], vec![], vec![], vec![], vec![]);
        if let Some(policies) = self.governance.policies() {
            for (user, groups) in &policies.users {
                if !self.view.admin && *user != self.view.identity.user {
                    continue;
                }
                let identity = Identity::new(user.clone(), groups.clone());
                let view = AccessView::compute(policies, self.governance.registry(), identity);
                let reveal = self.view.admin;
                let mut rows: Vec<_> = if view.unrestricted {
                    self.governance
                        .registry()
                        .ports()
                        .map(|(_, p)| (p.info.name.clone(), None))
                        .collect()
                } else {
                    view.visible()
                        .map(|(n, p)| (n.clone(), Some(p.clone())))
                        .collect()
                };
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, policy) in rows {
                    principal.push(Some(format!("user:{user}")));
                    port.push(Some(name.to_string()));
                    let Some(policy) = policy else {
                        filter.push(None);
                        masks.push(Vec::new());
                        by.push(Some("admin".to_string()));
                        continue;
                    };
                    filter.push((!policy.filters.is_empty()).then(|| {
                        if reveal {
                            policy
                                .filters
                                .iter()
                                .map(|f| format!("({})", f.text))
                                .collect::<Vec<_>>()
                                .join(" AND ")
                        } else {
                            "(applied)".to_string()
                        }
                    }));
                    masks.push(
                        policy
                            .masks
                            .iter()
                            .map(|(c, m)| {
                                if reveal {
                                    format!("{c}: {}", m.text)
                                } else {
                                    c.clone()
                                }
                            })
                            .collect(),
                    );
                    by.push(Some(policy.granted_by.join(", ")));
                }
            }
        }
        vec![
            Arc::new(StringArray::from(principal)),
            Arc::new(StringArray::from(port)),
            Arc::new(StringArray::from(filter)),
            tag_lists(masks),
            Arc::new(StringArray::from(by)),
        ]
    }
}

#[async_trait]
impl TableProvider for GovernanceMetaTable {
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
        let columns = match self.kind {
            GovernanceTable::QueryLog => self.query_log()?,
            GovernanceTable::Grants => self.grants(),
        };
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        scan_batch(batch, state, projection, filters, limit).await
    }
}
