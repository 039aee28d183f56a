//! The `access:` section of the main mesh file: who may sign in. (Who may read what
//! arrives with the governance rules.)
//!
//! An `access` section that does not decode is fatal: a server must never fall back to
//! open mode because its access rules had a typo.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
}

/// One user: a password (usually `${env:...}`) or its SHA-256 hex digest, and groups.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub password: Option<String>,
    pub password_sha256: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl fmt::Debug for UserConfig {
    /// Never prints a password or its digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "password_sha256",
                &self.password_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("groups", &self.groups)
            .finish()
    }
}

impl UserConfig {
    /// Exactly one way to check the password, and a digest that is 64 hex digits.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.password, &self.password_sha256) {
            (Some(_), Some(_)) => Err("set `password` or `password_sha256`, not both".into()),
            (None, None) => Err("a user needs `password` or `password_sha256`".into()),
            (Some(p), None) if p.is_empty() => Err("`password` is empty".into()),
            (None, Some(d)) if d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()) => Err(
                "`password_sha256` must be 64 hex digits (e.g. `printf %s PASSWORD | sha256sum`)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}
