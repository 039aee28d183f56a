//! Problems found in a mesh (file, line, column, subject, fix): `meshql-config`'s.

pub use meshql_config::problem::*;
