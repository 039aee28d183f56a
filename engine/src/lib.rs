//! meshql engine: the mesh configuration, the registry of domains, data products and
//! output ports, and their registration as DataFusion catalogs.
//!
//! The engine knows no concrete connector: it is given a [`ConnectorRegistry`].

pub mod admission;
pub mod allocator;
pub mod bounded;
pub mod config;
pub mod connector;
pub mod engine;
pub mod error;
pub mod federation;
pub mod governance;
pub mod limits;
pub mod mesh;
pub mod optimizer;
pub mod problem;
pub mod session;

pub use config::{MeshSpec, PortName, load_mesh};
pub use connector::{
    Connector, ConnectorError, ConnectorRegistry, PortLocation, Source, SourceContext,
};
pub use engine::{EngineOptions, MeshEngine};
pub use error::{Error, Result};
pub use governance::Identity;
pub use problem::Problem;
pub use session::{MeshSession, Planned};
