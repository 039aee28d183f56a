//! `${env:VAR}` interpolation in YAML string values; `${env:VAR:-default}` falls back
//! to `default` when VAR is unset.
//!
//! Interpolation happens on parsed values, not on the raw text, so a secret containing
//! YAML syntax (`:`, `#`, quotes) can never change the structure of the file.

use serde_yaml::Value;

use super::spans::KeyPath;

/// A variable that could not be resolved, with the path of the value that used it.
#[derive(Debug, Clone)]
pub struct MissingVar {
    pub path: KeyPath,
    pub message: String,
}

/// Replace `${env:VAR}` in every string of `value`, using `lookup` to read variables.
/// `$${` is a literal `${`.
pub fn interpolate(
    value: &mut Value,
    path: &mut KeyPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<MissingVar>,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => missing.push(MissingVar {
                path: path.clone(),
                message,
            }),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate(item, path, lookup, missing);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(key_string(k));
                interpolate(v, path, lookup, missing);
                path.pop();
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, lookup, missing),
        _ => {}
    }
}

/// A mapping key as the string used in key paths.
pub fn key_string(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::from("?"),
    }
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            // `$${` escapes a literal `${`.
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            String::from("unterminated `${` in this value (write `$${` for a literal `${`)")
        })?;
        let reference = &after[..end];
        let var = reference.strip_prefix("env:").ok_or_else(|| {
            format!(
                "unsupported reference `${{{reference}}}`: only `${{env:VARIABLE}}` is supported"
            )
        })?;
        let (var, default) = match var.split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (var, None),
        };
        let value = lookup(var)
            .or_else(|| default.map(str::to_string))
            .ok_or_else(|| {
                format!("environment variable `{var}` is not set (referenced as `${{env:{var}}}`)")
            })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| String::from("s3cr#t: x"))
    }

    #[test]
    fn expands_escapes_and_reports() {
        assert_eq!(expand("a${env:SECRET}b", &env).unwrap(), "as3cr#t: xb");
        assert_eq!(expand("$${env:SECRET}", &env).unwrap(), "${env:SECRET}");
        assert_eq!(expand("${env:NOPE:-x y}", &env).unwrap(), "x y");
        assert_eq!(expand("${env:SECRET:-x}", &env).unwrap(), "s3cr#t: x");
        assert!(
            expand("${env:NOPE}", &env)
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert!(
            expand("${vault:x}", &env)
                .unwrap_err()
                .contains("unsupported")
        );
        assert!(
            expand("${env:X", &env)
                .unwrap_err()
                .contains("unterminated")
        );
    }
}
