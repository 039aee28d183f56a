//! Typed decoding of YAML values with the key path of whatever went wrong, so the
//! caller can point at the file line. Connectors use [`decode`] for their own options.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::spans::KeyPath;

/// A value that did not decode: the path (relative to the decoded value) and why.
#[derive(Debug, Clone)]
pub struct DecodeError {
    pub path: KeyPath,
    pub message: String,
}

impl DecodeError {
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        DecodeError {
            path,
            message: message.into(),
        }
    }
}

/// Decode `value` into `T`. Unknown keys point at the key itself and suggest the
/// closest expected one.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut path: KeyPath = err
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let mut message = err.inner().to_string();
        if let Some((variant, expected)) = parse_unknown(&message, "unknown variant `") {
            message = format!(
                "unknown value `{variant}`; expected one of: {}",
                expected.join(", ")
            );
            if let Some(best) = closest(&variant, &expected) {
                message = format!("unknown value `{variant}`; did you mean `{best}`?");
            }
        } else if let Some((field, expected)) = parse_unknown(&message, "unknown field `") {
            if path.last() != Some(&field) {
                path.push(field.clone());
            }
            message = format!("unknown key `{field}`");
            match closest(&field, &expected) {
                Some(best) => message.push_str(&format!("; did you mean `{best}`?")),
                None if !expected.is_empty() => {
                    message.push_str(&format!("; expected one of: {}", expected.join(", ")))
                }
                None => {}
            }
        }
        DecodeError { path, message }
    })
}

/// Pull the name and the expected names out of serde's "unknown field `x`, expected
/// `a`, `b`" (or "unknown variant ...") message; serde has no structured form of it.
fn parse_unknown(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let field = rest[..end].to_string();
    // "`, expected `a`, `b` or `c`": names are the odd pieces after the field's quote.
    let expected = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field, expected))
}

/// The expected name closest to `given`, if it is plausibly a typo.
pub fn closest<'a>(given: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// For numeric keys that may come from `${env:...}` (always a string after
/// interpolation): accepts `5432` and `"5432"`.
pub fn number_or_string<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + serde::Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    use serde::Deserialize;
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Text(String),
    }
    match Either::<T>::deserialize(deserializer)? {
        Either::Value(v) => Ok(v),
        Either::Text(s) => s
            .trim()
            .parse()
            .map_err(|e| D::Error::custom(format!("`{s}` is not a valid number: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        owner: Option<String>,
        description: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[test]
    fn unknown_key_points_at_key_and_suggests() {
        let v: Value = serde_yaml::from_str("inner: { ownr: x }").unwrap();
        let err = decode::<Outer>(v).unwrap_err();
        assert_eq!(err.path, vec!["inner", "ownr"]);
        assert_eq!(err.message, "unknown key `ownr`; did you mean `owner`?");
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Format {
        Parquet,
        Csv,
    }

    #[test]
    fn unknown_variant_suggests() {
        let v: Value = serde_yaml::from_str("parquett").unwrap();
        let err = decode::<Format>(v).unwrap_err();
        assert_eq!(
            err.message,
            "unknown value `parquett`; did you mean `parquet`?"
        );
        let v: Value = serde_yaml::from_str("orc").unwrap();
        let err = decode::<Format>(v).unwrap_err();
        assert_eq!(
            err.message,
            "unknown value `orc`; expected one of: parquet, csv"
        );
    }

    #[test]
    fn type_error_has_path() {
        let v: Value = serde_yaml::from_str("inner: { owner: [1] }").unwrap();
        let err = decode::<Outer>(v).unwrap_err();
        assert_eq!(err.path, vec!["inner", "owner"]);
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }
}
