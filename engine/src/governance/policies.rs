//! The `access:` section compiled: principals and patterns parsed, expressions parsed,
//! everything located in the mesh file. Syntax problems here are fatal (a server must
//! never run with half of its rules); problems that need the ports' schemas are found
//! later by [`super::validate`].

use std::collections::BTreeMap;

use super::audit::AuditFile;
use super::expr::PolicyExpr;
use super::identity::{Identity, Principal};
use super::pattern::PortPattern;
use crate::problem::Problem;
use meshql_config::access::AccessConfig;
use meshql_config::{Origin, PortName};

/// The audit log of a governed mesh without `audit_log`, beside the main mesh file.
pub const DEFAULT_AUDIT_LOG: &str = "audit.jsonl";

/// `audit_log_rotate_mb` unless set.
pub const DEFAULT_ROTATE_MB: u64 = 64;
/// Rotating past a few GiB would defeat the point (bounded files to ship and read).
const MAX_ROTATE_MB: u64 = 16 << 10;

#[derive(Debug)]
pub struct Rule {
    /// 1-based, as shown to administrators.
    pub number: usize,
    pub origin: Origin,
    pub principals: Vec<Principal>,
    pub allow: Vec<(PortPattern, Origin)>,
    pub deny: Vec<(PortPattern, Origin)>,
    pub row_filters: Vec<(PortName, PolicyExpr)>,
    pub column_masks: Vec<(PortName, String, PolicyExpr)>,
}

impl Rule {
    pub fn applies_to(&self, identity: &Identity) -> bool {
        self.principals.iter().any(|p| p.matches(identity))
    }
}

#[derive(Debug)]
pub struct TagPolicy {
    pub tag: String,
    pub mask: PolicyExpr,
    pub unless: Vec<Principal>,
}

#[derive(Debug)]
pub struct Policies {
    pub admins: Vec<Principal>,
    pub rules: Vec<Rule>,
    pub tag_policies: Vec<TagPolicy>,
    pub audit_log: Option<AuditFile>,
    /// The `access` key, for problems about the section as a whole.
    pub origin: Origin,
    /// Declared users and their groups (for `mesh.meta.grants` and typo checks).
    pub users: BTreeMap<String, Vec<String>>,
}

impl Policies {
    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.admins.iter().any(|p| p.matches(identity))
    }

    /// Compile `access` (declared at `origin`). Returns every problem found.
    pub fn compile(access: &AccessConfig, origin: &Origin) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let at = |path: &[&str]| {
            let mut o = origin.clone();
            o.path.extend(path.iter().map(|s| s.to_string()));
            o
        };
        for name in access.users.keys() {
            if name.contains(':') || name.trim().is_empty() || name == "*" {
                problems.push(
                    at(&["users", name])
                        .problem(format!("`{name}` cannot be a user name"))
                        .with_help("user names cannot be empty, `*`, or contain `:`"),
                );
            }
        }
        let mut principals = |list: &[String], path: &[&str]| -> Vec<Principal> {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let mut p = path.to_vec();
                    let index = i.to_string();
                    p.push(&index);
                    Principal::parse(text)
                        .map_err(|m| problems.push(at(&p).problem(m)))
                        .ok()
                })
                .collect()
        };
        let admins = principals(&access.admins, &["admins"]);
        let mut rules_principals = Vec::new();
        for (i, rule) in access.rules.iter().enumerate() {
            let index = i.to_string();
            rules_principals.push(principals(
                &rule.principals,
                &["rules", &index, "principals"],
            ));
        }
        let tag_unless: Vec<Vec<Principal>> = access
            .tag_policies
            .iter()
            .enumerate()
            .map(|(i, t)| principals(&t.unless, &["tag_policies", &i.to_string(), "unless"]))
            .collect();

        let mut rules = Vec::new();
        for ((i, rule), principals) in access.rules.iter().enumerate().zip(rules_principals) {
            let index = i.to_string();
            let rule_origin = at(&["rules", &index]);
            if rule.principals.is_empty() {
                problems.push(
                    rule_origin
                        .problem("this rule names no principals")
                        .with_help("add `principals: [group:NAME]` (or user:NAME, or \"*\")"),
                );
            }
            let mut patterns = |list: &[String], key: &str| -> Vec<(PortPattern, Origin)> {
                list.iter()
                    .enumerate()
                    .filter_map(|(j, text)| {
                        let o = at(&["rules", &index, key, &j.to_string()]);
                        match PortPattern::parse(text) {
                            Ok(p) => Some((p, o)),
                            Err(m) => {
                                problems.push(o.problem(m));
                                None
                            }
                        }
                    })
                    .collect()
            };
            let allow = patterns(&rule.allow, "allow");
            let deny = patterns(&rule.deny, "deny");
            let mut row_filters = Vec::new();
            for (port, text) in &rule.row_filters {
                let o = at(&["rules", &index, "row_filters", port]);
                match parse_port_name(port) {
                    Ok(name) => match PolicyExpr::parse(text, o) {
                        Ok(e) => row_filters.push((name, e)),
                        Err(p) => problems.push(p.with_subject(format!("row filter on `{port}`"))),
                    },
                    Err(m) => problems.push(o.problem(m)),
                }
            }
            let mut column_masks = Vec::new();
            for (key, text) in &rule.column_masks {
                let o = at(&["rules", &index, "column_masks", key]);
                match parse_column_name(key) {
                    Ok((name, column)) => match PolicyExpr::parse(text, o) {
                        Ok(e) => column_masks.push((name, column, e)),
                        Err(p) => problems.push(p.with_subject(format!("column mask on `{key}`"))),
                    },
                    Err(m) => problems.push(o.problem(m)),
                }
            }
            rules.push(Rule {
                number: i + 1,
                origin: rule_origin,
                principals,
                allow,
                deny,
                row_filters,
                column_masks,
            });
        }

        let mut tag_policies = Vec::new();
        for ((i, t), unless) in access.tag_policies.iter().enumerate().zip(tag_unless) {
            let o = at(&["tag_policies", &i.to_string(), "mask"]);
            match PolicyExpr::parse(&t.mask, o) {
                Ok(mask) => tag_policies.push(TagPolicy {
                    tag: t.tag.clone(),
                    mask,
                    unless,
                }),
                Err(p) => problems.push(p.with_subject(format!("tag policy `{}`", t.tag))),
            }
        }
        // Once there are rules, statements are audited to a file: next to the main mesh
        // file unless `audit_log` says where.
        let path = match &access.audit_log {
            Some(p) => origin.file.dir.join(p.trim()),
            None => origin.file.dir.join(DEFAULT_AUDIT_LOG),
        };
        let rotate_mb = access.audit_log_rotate_mb.unwrap_or(DEFAULT_ROTATE_MB);
        if rotate_mb > MAX_ROTATE_MB {
            problems.push(
                at(&["audit_log_rotate_mb"])
                    .problem(format!(
                        "{rotate_mb} MiB is more than the largest rotation size"
                    ))
                    .with_help(format!(
                        "use at most {MAX_ROTATE_MB} (or 0 to never rotate)"
                    )),
            );
        }
        if access.audit_log_keep == Some(0) {
            problems.push(
                at(&["audit_log_keep"])
                    .problem("keeping 0 rotated files would delete each one as it is made")
                    .with_help("keep at least 1, or leave the key out to keep every file"),
            );
        }
        let audit_log = Some(AuditFile {
            path,
            rotate_bytes: rotate_mb << 20,
            keep: access.audit_log_keep,
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policies {
            admins,
            rules,
            tag_policies,
            audit_log,
            origin: origin.clone(),
            users: access
                .users
                .iter()
                .map(|(n, u)| (n.clone(), u.groups.clone()))
                .collect(),
        })
    }
}

fn parse_port_name(text: &str) -> Result<PortName, String> {
    match text.split('.').collect::<Vec<_>>()[..] {
        [d, p, t] if !d.is_empty() && !p.is_empty() && !t.is_empty() && !text.contains('*') => {
            Ok(PortName {
                domain: d.into(),
                product: p.into(),
                port: t.into(),
            })
        }
        _ => Err(format!(
            "`{text}` must name one output port as `domain.product.port` (no wildcards)"
        )),
    }
}

fn parse_column_name(text: &str) -> Result<(PortName, String), String> {
    match text.rsplit_once('.') {
        Some((port, column)) if !column.is_empty() && port.split('.').count() == 3 => {
            Ok((parse_port_name(port)?, column.to_string()))
        }
        _ => Err(format!(
            "`{text}` must name one column as `domain.product.port.column`"
        )),
    }
}
