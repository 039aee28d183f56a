//! Who a statement runs as, and the principals rules name.

use std::fmt;

/// A signed-in user (or the definer of a derived port) with their groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(user: impl Into<String>, groups: Vec<String>) -> Self {
        Identity {
            user: user.into(),
            groups,
        }
    }

    /// Callers in open mode (a mesh without `access:`) that gave no name.
    pub fn anonymous() -> Self {
        Identity::new("anonymous", Vec::new())
    }

    /// The definer of a derived port: its domain's owner group. The user part cannot
    /// collide with a real user, whose names may not contain `:`.
    pub fn owner_group(group: &str) -> Self {
        Identity::new(format!("group:{group}"), vec![group.to_string()])
    }

    pub fn is_member(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// `user:NAME`, `group:NAME` or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(String),
    Group(String),
    Anyone,
}

impl Principal {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Principal::Anyone);
        }
        let (kind, name) = text.split_once(':').ok_or_else(|| {
            format!("principal `{text}` must be `user:NAME`, `group:NAME` or \"*\"")
        })?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("principal `{text}` has no name after `{kind}:`"));
        }
        match kind.trim() {
            "user" => Ok(Principal::User(name.to_string())),
            "group" => Ok(Principal::Group(name.to_string())),
            other => Err(format!(
                "unknown principal kind `{other}` in `{text}`: use `user:NAME`, `group:NAME` or \"*\""
            )),
        }
    }

    pub fn matches(&self, identity: &Identity) -> bool {
        match self {
            Principal::User(name) => identity.user == *name,
            Principal::Group(name) => identity.is_member(name),
            Principal::Anyone => true,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(n) => write!(f, "user:{n}"),
            Principal::Group(n) => write!(f, "group:{n}"),
            Principal::Anyone => write!(f, "*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_match() {
        let alice = Identity::new("alice", vec!["analysts".into()]);
        assert!(Principal::parse("user:alice").unwrap().matches(&alice));
        assert!(Principal::parse("group:analysts").unwrap().matches(&alice));
        assert!(!Principal::parse("group:admins").unwrap().matches(&alice));
        assert!(Principal::parse("*").unwrap().matches(&alice));
        assert!(Principal::parse("alice").is_err());
        assert!(Principal::parse("role:x").is_err());
        assert!(Principal::parse("user:").is_err());
    }
}
