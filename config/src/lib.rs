//! The mesh files as plain data: their model, reading them with their includes and
//! `${env:VAR}` interpolation, the position of every key, and [`Problem`]s that name the
//! file, line and column. Nothing here knows DataFusion, sessions or governance: the
//! engine compiles what is read (access rules into policies, ports into tables).

pub mod access;
pub mod decode;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod problem;
pub mod spans;

pub use decode::{DecodeError, decode};
pub use load::{ConfigError, MeshSpec, Origin, PortName, PortSpec, load_mesh, load_mesh_with_env};
pub use problem::Problem;
