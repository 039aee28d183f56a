//! `domain.product.port` patterns of `allow` and `deny`: `*` matches any run of
//! characters inside one name part; missing trailing parts match everything
//! (`sales` = `sales.*.*`).

use std::fmt;

use crate::config::PortName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPattern {
    parts: [String; 3],
}

impl PortPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(format!(
                "`{text}` is not a port pattern: write `domain.product.port`, where any part may be `*`"
            ));
        }
        let part = |i: usize| parts.get(i).map_or("*", |p| p.trim()).to_string();
        Ok(PortPattern {
            parts: [part(0), part(1), part(2)],
        })
    }

    pub fn matches(&self, port: &PortName) -> bool {
        glob(&self.parts[0], &port.domain)
            && glob(&self.parts[1], &port.product)
            && glob(&self.parts[2], &port.port)
    }
}

impl fmt::Display for PortPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.parts.join("."))
    }
}

/// `*` matches any (possibly empty) run of characters; everything else literally.
fn glob(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(s: &str) -> PortName {
        let p: Vec<&str> = s.split('.').collect();
        PortName {
            domain: p[0].into(),
            product: p[1].into(),
            port: p[2].into(),
        }
    }

    #[test]
    fn patterns_match_by_part() {
        let m = |pat: &str, name: &str| PortPattern::parse(pat).unwrap().matches(&port(name));
        assert!(m("sales.*.*", "sales.orders.lineitem"));
        assert!(m("sales", "sales.orders.lineitem"));
        assert!(m("sales.orders", "sales.orders.lineitem"));
        assert!(!m("sales.*.*", "salesx.orders.lineitem"));
        assert!(m("*.*.*", "a.b.c"));
        assert!(m("sales.orders.raw_*", "sales.orders.raw_events"));
        assert!(!m("sales.orders.raw_*", "sales.orders.raws"));
        assert!(m("sales.*s.*item", "sales.orders.lineitem"));
        assert!(!m("sales.orders.line", "sales.orders.lineitem"));
        assert!(PortPattern::parse("a.b.c.d").is_err());
        assert!(PortPattern::parse("a..c").is_err());
    }
}
