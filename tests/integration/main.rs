//! meshql integration tests: one binary for the whole workspace (each test binary links
//! all of DataFusion). Needs the environment the README's test command sets up.

mod support;

mod cache;
mod check;
mod deep;
mod federation;
mod flight;
mod lake;
mod leakproof;
mod limits;
mod policy;
mod query;
mod rule_matrix;
mod slt;
mod tpch;
mod wire;
