//! `domain.product.port` patterns of `allow` and `deny`: `*` matches any run of
//! characters inside one name part. A pattern names all three parts (`sales.*.*`), or
//! is `*` alone (every port): a shorter one (`sales`, `sales.*`) is refused rather than
//! read one way or the other, since an access rule that grants more than its author
//! meant is a leak. Runs of stars (`**`) are refused too: they mean nothing more than
//! `*` and are usually a typo.

use std::fmt;

use meshql_config::PortName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPattern {
    parts: [String; 3],
}

impl PortPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(PortPattern {
                parts: ["*".into(), "*".into(), "*".into()],
            });
        }
        let parts: Vec<&str> = t.split('.').map(str::trim).collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            let hint = match parts.as_slice() {
                [domain] if !domain.is_empty() && !domain.contains('*') => {
                    format!("; for every port of `{domain}` write `{domain}.*.*`")
                }
                [domain, product] if !domain.is_empty() && !product.is_empty() => {
                    format!("; for every port of `{domain}.{product}` write `{domain}.{product}.*`")
                }
                _ => String::new(),
            };
            return Err(format!(
                "`{text}` is not a port pattern: write `domain.product.port`, where any part may \
                 hold `*`, or `*` alone for every port{hint}"
            ));
        }
        if let Some(part) = parts.iter().find(|p| p.contains("**")) {
            return Err(format!(
                "`{text}` is not a port pattern: `{part}` has `**`; one `*` matches any run of \
                 characters in a part"
            ));
        }
        Ok(PortPattern {
            parts: [parts[0].into(), parts[1].into(), parts[2].into()],
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
        assert!(m("*", "sales.orders.lineitem"));
        for short in ["sales", "sales.*", "***", "sales.**.*", "*.*"] {
            assert!(PortPattern::parse(short).is_err(), "{short}");
        }
        assert!(
            PortPattern::parse("sales")
                .unwrap_err()
                .contains("write `sales.*.*`")
        );
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
