//! The mesh as DataFusion catalogs: a domain is a catalog, a data product a schema, an
//! output port a table. So `sales.orders.lineitem` and `information_schema` work natively.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::Result as DFResult;

use super::port::{Opener, PortEntry};

/// A domain as a catalog.
#[derive(Debug)]
pub struct DomainCatalog {
    products: BTreeMap<String, Arc<ProductSchema>>,
}

impl DomainCatalog {
    pub fn new(products: BTreeMap<String, Arc<ProductSchema>>) -> Self {
        DomainCatalog { products }
    }
}

impl CatalogProvider for DomainCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.products.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.products
            .get(name)
            .map(|p| Arc::clone(p) as Arc<dyn SchemaProvider>)
    }
}

/// A data product as a schema of output ports.
#[derive(Debug)]
pub struct ProductSchema {
    owner: Option<String>,
    ports: BTreeMap<String, Arc<PortEntry>>,
    /// Used to reopen a port that failed (see [`PortEntry::table_or_error`]).
    opener: Opener,
}

impl ProductSchema {
    pub fn new(
        owner: Option<String>,
        ports: BTreeMap<String, Arc<PortEntry>>,
        opener: Opener,
    ) -> Self {
        ProductSchema {
            owner,
            ports,
            opener,
        }
    }
}

#[async_trait]
impl SchemaProvider for ProductSchema {
    fn owner_name(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Only ports that can be read right now: listings (`information_schema`, `SHOW
    /// TABLES`) keep working when one port is broken. `mesh.meta.output_ports` lists all
    /// ports with their status.
    fn table_names(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|(_, port)| port.table().is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A broken port is an error naming the port and the cause, not "table not found".
    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        match self.ports.get(name) {
            Some(port) => port.table_or_error(&self.opener).await.map(Some),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.ports.contains_key(name)
    }
}
