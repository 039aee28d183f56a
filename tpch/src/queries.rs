//! The 22 TPC-H queries with their reference answers at SF 0.1 (see `answers/README.md`),
//! and the rewrite of their table names to a mesh layout's port names.

use crate::generate::Table;

/// One query of the correctness suite.
#[derive(Debug, Clone)]
pub struct AnswerFile {
    pub number: u8,
    /// As written, over bare table names (`lineitem`).
    pub sql: String,
    /// sqllogictest column types: `I` integer, `R` real or decimal, `T` text.
    pub types: String,
    /// Rows as DataFusion's sqllogictest prints them: values joined by one space,
    /// numbers rounded to 12 decimals without trailing zeros.
    pub expected: Vec<String>,
}

macro_rules! answers {
    ($($n:literal),*) => {
        [$(($n, include_str!(concat!("../answers/sf0.1/q", $n, ".slt.part")))),*]
    };
}

const SF01: [(u8, &str); 22] = answers!(
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22
);

/// The queries and answers at SF 0.1, Q1 to Q22.
pub fn sf01_answers() -> Vec<AnswerFile> {
    SF01.iter()
        .map(|(number, text)| parse(*number, text))
        .collect()
}

/// A `query TYPES` record: the statement, `----`, the rows.
fn parse(number: u8, text: &str) -> AnswerFile {
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let start = body
        .iter()
        .position(|l| l.starts_with("query "))
        .unwrap_or_else(|| panic!("q{number}: no `query` record"));
    let types = body[start].trim_start_matches("query ").trim().to_string();
    let rest = &body[start + 1..];
    let split = rest
        .iter()
        .position(|l| l.trim() == "----")
        .unwrap_or_else(|| panic!("q{number}: no `----` line"));
    let sql = rest[..split]
        .join("\n")
        .trim()
        .trim_end_matches(';')
        .to_string();
    let expected = rest[split + 1..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    AnswerFile {
        number,
        sql,
        types,
        expected,
    }
}

/// The 22 queries for scale factor `sf`: the answer files' statements with Q11's
/// fraction set as the specification says (0.0001 / SF).
pub fn for_scale_factor(sf: f64) -> Vec<(u8, String)> {
    sf01_answers()
        .into_iter()
        .map(|q| {
            let sql = if q.number == 11 {
                q.sql.replace("0.0001", &format!("{}", 0.0001 / sf))
            } else {
                q.sql
            };
            (q.number, sql)
        })
        .collect()
}

/// `sql` with each table name in a FROM list (after FROM, JOIN, or a comma in a FROM
/// list; outside string literals) replaced by `port(table)`. Aliases and columns that
/// share a table's name (`n_name as nation`) stay.
pub fn qualify(sql: &str, port: impl Fn(Table) -> String) -> String {
    let mut out = String::with_capacity(sql.len() * 2);
    let chars: Vec<char> = sql.chars().collect();
    let mut in_from = false;
    // The last word (lowercase) or punctuation seen.
    let mut previous = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A string literal, copied as is ('' is an escaped quote).
            let start = i;
            i += 1;
            while i < chars.len() && !(chars[i] == '\'' && chars.get(i + 1) != Some(&'\'')) {
                i += if chars[i] == '\'' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
            out.extend(&chars[start..i]);
            previous = "'".into();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let table_position =
                previous == "from" || previous == "join" || (previous == "," && in_from);
            match Table::ALL.into_iter().find(|t| t.name() == lower) {
                Some(table) if table_position => out.push_str(&port(table)),
                _ => out.push_str(&word),
            }
            match lower.as_str() {
                "from" | "join" => in_from = true,
                "where" | "group" | "order" | "having" | "limit" | "select" | "on" | "union" => {
                    in_from = false
                }
                _ => {}
            }
            previous = lower;
        } else {
            out.push(c);
            if !c.is_whitespace() {
                previous = c.to_string();
            }
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_22_parse_with_rows() {
        let all = sf01_answers();
        assert_eq!(all.len(), 22);
        for q in &all {
            assert!(q.sql.to_lowercase().starts_with("select") || q.sql.starts_with("with"));
            assert!(!q.expected.is_empty(), "q{}", q.number);
        }
        assert_eq!(all[0].types, "TTRRRRRRRI");
        assert_eq!(all[0].expected.len(), 4);
    }

    #[test]
    fn only_table_names_are_qualified() {
        let sql = "select n_name as nation, c_orders from orders, customer c \
                   left join nation on x = y where p_type like '%orders%' and n.nation = 'part'";
        let got = qualify(sql, |t| format!("m.p.{}", t.name()));
        assert_eq!(
            got,
            "select n_name as nation, c_orders from m.p.orders, m.p.customer c \
             left join m.p.nation on x = y where p_type like '%orders%' and n.nation = 'part'"
        );
    }
}
