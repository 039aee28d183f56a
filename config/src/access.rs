//! The `access:` section of the main mesh file: who may sign in, who may read what
//! (rules, row filters, column masks, tag policies) and where statements are audited.
//! The engine compiles it into checked policies (`meshql_engine::governance::policies`).
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
    /// Principals that see everything, unfiltered, including the audit log and grants.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Grants, denies, row filters and column masks; all matching rules apply.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Global masks for columns carrying a tag.
    #[serde(default)]
    pub tag_policies: Vec<TagPolicyConfig>,
    /// Append-only JSON lines file, relative to the main mesh file.
    pub audit_log: Option<String>,
    /// Start a new audit file once the current one passes this many MiB (0: never).
    pub audit_log_rotate_mb: Option<u64>,
    /// Rotated audit files kept (the oldest are deleted); unset keeps them all.
    pub audit_log_keep: Option<usize>,
}

/// `access.rules[i]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `user:NAME`, `group:NAME` or `"*"`.
    pub principals: Vec<String>,
    /// `domain.product.port` patterns; `*` matches any name part.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    /// Port name -> SQL condition over the port's columns.
    #[serde(default)]
    pub row_filters: BTreeMap<String, String>,
    /// `domain.product.port.column` -> SQL expression replacing the column's value.
    #[serde(default)]
    pub column_masks: BTreeMap<String, String>,
}

/// `access.tag_policies[i]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagPolicyConfig {
    pub tag: String,
    pub mask: String,
    /// Principals the mask does not apply to.
    #[serde(default)]
    pub unless: Vec<String>,
}

/// One user: a password (usually `${env:...}`) or its SHA-256 hex digest, and groups.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub password: Option<String>,
    pub password_sha256: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// This user (a gateway) may run statements for other users: those that carry the
    /// end user's name signed with this secret run as that user.
    pub delegation_secret: Option<String>,
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
            .field(
                "delegation_secret",
                &self.delegation_secret.as_ref().map(|_| "<redacted>"),
            )
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
            _ if self.delegation_secret.as_deref().is_some_and(str::is_empty) => {
                Err("`delegation_secret` is empty".into())
            }
            _ => Ok(()),
        }
    }
}
