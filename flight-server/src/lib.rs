//! The `meshql` binary's library: the Arrow Flight SQL server, the REPL and result printing.

pub mod output;
pub mod repl;
pub mod server;
