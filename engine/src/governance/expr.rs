//! Policy expressions (row filters and masks) as written in the mesh file: parsed once
//! when the mesh loads, then instantiated per identity by replacing `current_user()`
//! and `is_member('group')` with literals, so the planned policy holds no reference
//! to who is asking and can be optimized like any constant.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, Value,
    visit_expressions, visit_expressions_mut, visit_relations,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::identity::Identity;
use crate::problem::Problem;
use meshql_config::Origin;

/// One row filter or mask.
#[derive(Debug, Clone)]
pub struct PolicyExpr {
    /// As written.
    pub text: String,
    ast: SqlExpr,
    /// The mesh file key that holds it, for problems.
    pub origin: Origin,
}

impl PolicyExpr {
    pub fn parse(text: &str, origin: Origin) -> Result<Self, Problem> {
        let normalized = normalize_identity_calls(text);
        let invalid = |m: String| origin.problem(m).with_help("write one SQL expression");
        let mut parser = Parser::new(&GenericDialect {})
            .try_with_sql(&normalized)
            .map_err(|e| invalid(format!("invalid SQL expression: {e}")))?;
        let ast = parser
            .parse_expr()
            .map_err(|e| invalid(format!("invalid SQL expression: {e}")))?;
        let next = parser.peek_token();
        if next.token != Token::EOF {
            return Err(invalid(format!(
                "invalid SQL expression: unexpected `{}` after the expression",
                next.token
            )));
        }
        let bad_call = visit_expressions(&ast, |e| match identity_call(e) {
            Some(Err(m)) => ControlFlow::Break(m),
            _ => ControlFlow::Continue(()),
        });
        if let ControlFlow::Break(message) = bad_call {
            return Err(origin.problem(message));
        }
        Ok(PolicyExpr {
            text: text.to_string(),
            ast,
            origin,
        })
    }

    /// The expression as SQL for `identity`: identity functions become literals.
    pub fn sql_for(&self, identity: &Identity) -> String {
        let mut ast = self.ast.clone();
        let _ = visit_expressions_mut(&mut ast, |e| {
            if let Some(Ok(call)) = identity_call(e) {
                *e = match call {
                    IdentityCall::CurrentUser => {
                        SqlExpr::value(Value::SingleQuotedString(identity.user.clone()))
                    }
                    IdentityCall::IsMember(group) => {
                        SqlExpr::value(Value::Boolean(identity.is_member(&group)))
                    }
                };
            }
            ControlFlow::<()>::Continue(())
        });
        ast.to_string()
    }

    /// Tables the expression's subqueries read.
    pub fn table_refs(&self) -> Vec<ObjectName> {
        let mut refs = Vec::new();
        let _ = visit_relations(&self.ast, |r| {
            refs.push(r.clone());
            ControlFlow::<()>::Continue(())
        });
        refs
    }
}

enum IdentityCall {
    CurrentUser,
    IsMember(String),
}

/// `current_user` / `is_member('g')`, or why the call is malformed.
fn identity_call(e: &SqlExpr) -> Option<Result<IdentityCall, String>> {
    let SqlExpr::Function(f) = e else { return None };
    let name = f.name.to_string().to_ascii_lowercase();
    match name.as_str() {
        "current_user" => Some(Ok(IdentityCall::CurrentUser)),
        "is_member" => {
            let arg = match &f.args {
                FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(v))) => {
                        match &v.value {
                            Value::SingleQuotedString(s) => Some(s.clone()),
                            _ => None,
                        }
                    }
                    _ => None,
                },
                _ => None,
            };
            Some(arg.map(IdentityCall::IsMember).ok_or_else(|| {
                format!(
                    "`{e}`: is_member takes one group name in quotes, e.g. is_member('analysts')"
                )
            }))
        }
        _ => None,
    }
}

/// `current_user()` with parentheses is what people write; the SQL standard (and
/// sqlparser) only knows the bare keyword. Drop the empty parentheses outside quotes.
pub fn normalize_identity_calls(sql: &str) -> String {
    const WORD: &str = "current_user";
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == b'\'' || c == b'"' {
            quote = Some(c);
        } else if sql[i..].len() >= WORD.len()
            && sql.is_char_boundary(i + WORD.len())
            && sql[i..i + WORD.len()].eq_ignore_ascii_case(WORD)
            && (i == 0 || !is_ident(bytes[i - 1]))
        {
            let after = &sql[i + WORD.len()..];
            let rest = after.trim_start();
            if let Some(inner) = rest.strip_prefix('(') {
                let inner = inner.trim_start();
                if let Some(tail) = inner.strip_prefix(')') {
                    out.push_str(&sql[i..i + WORD.len()]);
                    i = sql.len() - tail.len();
                    continue;
                }
            }
            if after.as_bytes().first().is_none_or(|b| !is_ident(*b)) {
                out.push_str(&sql[i..i + WORD.len()]);
                i += WORD.len();
                continue;
            }
        }
        let ch = sql[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_user_parentheses_are_dropped_outside_quotes() {
        assert_eq!(
            normalize_identity_calls("owner = current_user() AND x = 'current_user()'"),
            "owner = current_user AND x = 'current_user()'"
        );
        assert_eq!(
            normalize_identity_calls("CURRENT_USER ( ) || my_current_user()"),
            "CURRENT_USER || my_current_user()"
        );
        assert_eq!(
            normalize_identity_calls("é = current_user"),
            "é = current_user"
        );
    }
}
