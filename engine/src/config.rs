//! The mesh files, read by the `meshql-config` crate (plain data, no DataFusion), with
//! their `access:` section compiled into policies here. A section that does not compile
//! makes the whole mesh unusable: a server never runs with half of its rules, nor falls
//! back to open mode.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use meshql_config::{
    DecodeError, Origin, PortName, PortSpec, access, decode, interpolate, load, model, spans,
};

use crate::error::{Error, Result};
use crate::governance::Policies;

/// A mesh as declared, with its access rules compiled.
#[derive(Debug)]
pub struct MeshSpec {
    pub declared: meshql_config::MeshSpec,
    /// `None`: no `access:` section, the mesh runs open (loopback only).
    pub policies: Option<Arc<Policies>>,
}

impl Deref for MeshSpec {
    type Target = meshql_config::MeshSpec;

    fn deref(&self) -> &meshql_config::MeshSpec {
        &self.declared
    }
}

/// Load the mesh rooted at `path`, reading variables from the process environment.
pub fn load_mesh(path: &Path) -> Result<MeshSpec> {
    load_mesh_with_env(path, &|name| std::env::var(name).ok())
}

/// Load the mesh rooted at `path`, reading `${env:VAR}` through `lookup`, and compile
/// its access rules. Fails only when the main file or its `access:` section cannot be
/// used; everything else is a problem in the spec.
pub fn load_mesh_with_env(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MeshSpec> {
    let declared =
        meshql_config::load_mesh_with_env(path, lookup).map_err(|e| Error::Config(e.0))?;
    let policies = declared
        .access
        .as_ref()
        .map(|access| Policies::compile(access, &declared.root_origin().child("access")))
        .transpose()
        .map_err(Error::Config)?
        .map(Arc::new);
    Ok(MeshSpec { declared, policies })
}
