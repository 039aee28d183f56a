//! Shared test support: the fixture mesh, the S3 server, the slt runner, the binary.

pub(crate) mod cli;
pub(crate) mod federation;
pub(crate) mod fixture;
pub(crate) mod pg;
pub(crate) mod reaper;
pub(crate) mod s3;
pub(crate) mod server;
pub(crate) mod slt;
pub(crate) mod sql;
