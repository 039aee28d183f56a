//! The catalogs a statement sees: the mesh as one identity may see it. Hidden ports,
//! and products and domains with no visible port, are absent, so "does not exist" and
//! "not allowed" read the same everywhere names are resolved or listed
//! (`information_schema`, SHOW TABLES, metadata RPCs, completion).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::Result as DFResult;

use super::Governance;
use super::view::AccessView;
use crate::mesh::meta::META_CATALOG;
use meshql_config::PortName;

/// Ports a statement named but may not read; the audit log says why it failed.
pub type Denials = Arc<Mutex<BTreeSet<PortName>>>;

#[derive(Debug)]
pub struct SecuredCatalogList {
    pub(super) governance: Arc<Governance>,
    pub(super) view: Arc<AccessView>,
    pub(super) meta: Arc<dyn CatalogProvider>,
    pub(super) denials: Denials,
}

impl SecuredCatalogList {
    fn visible_products(&self, domain: &str) -> Vec<String> {
        let Some(info) = self.governance.registry().domains.get(domain) else {
            return Vec::new();
        };
        info.products
            .values()
            .filter(|p| {
                p.ports
                    .values()
                    .any(|port| self.view.can_read(&port.info.name))
            })
            .map(|p| p.name.clone())
            .collect()
    }
}

impl CatalogProviderList for SecuredCatalogList {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Users cannot add catalogs (DDL is refused before it gets here).
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        let mut names = vec![META_CATALOG.to_string()];
        for domain in self.governance.registry().domains.keys() {
            if !self.visible_products(domain).is_empty() {
                names.push(domain.clone());
            }
        }
        names
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name == META_CATALOG {
            return Some(Arc::clone(&self.meta));
        }
        let raw = self.governance.raw_catalogs().catalog(name)?;
        if !self.governance.registry().domains.contains_key(name) {
            return None;
        }
        // A domain with no visible port still resolves (empty, unlisted), so that a
        // statement naming a port in it is audited as denied; SQL reports "table not
        // found" exactly as for a domain that does not exist.
        let products = self.visible_products(name);
        Some(Arc::new(SecuredCatalog {
            domain: name.to_string(),
            products,
            raw,
            list: self.clone_parts(),
        }))
    }
}

impl SecuredCatalogList {
    fn clone_parts(&self) -> Parts {
        Parts {
            governance: Arc::clone(&self.governance),
            view: Arc::clone(&self.view),
            denials: Arc::clone(&self.denials),
        }
    }
}

#[derive(Debug, Clone)]
struct Parts {
    governance: Arc<Governance>,
    view: Arc<AccessView>,
    denials: Denials,
}

#[derive(Debug)]
struct SecuredCatalog {
    domain: String,
    products: Vec<String>,
    raw: Arc<dyn CatalogProvider>,
    list: Parts,
}

impl CatalogProvider for SecuredCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.products.clone()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        // A product with no visible port is as absent as one that does not exist; a
        // statement naming a port in it is still recorded as denied.
        let raw = self.raw.schema(name)?;
        Some(Arc::new(SecuredSchema {
            domain: self.domain.clone(),
            product: name.to_string(),
            visible: self.products.iter().any(|p| p == name),
            raw,
            list: self.list.clone(),
        }))
    }
}

#[derive(Debug)]
struct SecuredSchema {
    domain: String,
    product: String,
    visible: bool,
    raw: Arc<dyn SchemaProvider>,
    list: Parts,
}

impl SecuredSchema {
    fn port(&self, table: &str) -> PortName {
        PortName {
            domain: self.domain.clone(),
            product: self.product.clone(),
            port: table.to_string(),
        }
    }
}

#[async_trait]
impl SchemaProvider for SecuredSchema {
    fn table_names(&self) -> Vec<String> {
        if !self.visible {
            return Vec::new();
        }
        self.raw
            .table_names()
            .into_iter()
            .filter(|t| self.list.view.can_read(&self.port(t)))
            .collect()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let port = self.port(name);
        if !self.list.view.can_read(&port) {
            if self.raw.table_exist(name)
                && let Ok(mut denials) = self.list.denials.lock()
            {
                denials.insert(port);
            }
            return Ok(None);
        }
        let Some(raw) = self.raw.table(name).await? else {
            return Ok(None);
        };
        self.list
            .view
            .table_for(&self.list.governance, &port, raw)
            .await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.list.view.can_read(&self.port(name)) && self.raw.table_exist(name)
    }
}
