//! Shared test support: the fixture mesh, the S3 server, the slt runner, the binary.

pub mod cli;
pub mod federation;
pub mod fixture;
pub mod pg;
pub mod reaper;
pub mod s3;
pub mod server;
pub mod slt;
pub mod sql;
