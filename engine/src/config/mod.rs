//! The mesh configuration: file format, loading, positions for error messages.

pub mod access;
pub mod decode;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod spans;

pub use decode::{DecodeError, decode};
pub use load::{MeshSpec, Origin, PortName, PortSpec, load_mesh, load_mesh_with_env};
