//! The `meshql` binary's library: the Arrow Flight SQL server and result printing.

pub mod output;
pub mod server;
