//! `CALL mesh.refresh()` / `CALL mesh.refresh('source')`: forget what sources said
//! about their tables (schemas, row counts) and open their ports again, so a changed
//! remote table, a new Delta version or a source that came back is used without a
//! restart. Ports already being read keep the table they started with.

use std::sync::Arc;

use futures::StreamExt;

use super::MeshRegistry;

/// Ports refreshed at the same time.
const REFRESH_CONCURRENCY: usize = 8;

/// What happened to one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub port: String,
    pub source: String,
    /// `ready`, or `unavailable: <problem>`.
    pub status: String,
}

impl MeshRegistry {
    /// Refresh the ports of `only` (a source name), or of every source.
    pub async fn refresh(&self, only: Option<&str>) -> Result<Vec<Refreshed>, String> {
        if let Some(name) = only
            && !self.sources.contains_key(name)
        {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            return Err(format!(
                "there is no source `{name}` in the mesh (sources: {})",
                known.join(", ")
            ));
        }
        let chosen = |source: &str| only.is_none_or(|name| name == source);
        for info in self.sources.values().filter(|s| chosen(&s.name)) {
            if let Some(source) = &info.source {
                source.refresh();
            }
        }
        let ports: Vec<_> = self
            .ports()
            .filter(|(_, p)| p.info.source.as_deref().is_some_and(chosen))
            .map(|(_, p)| Arc::clone(p))
            .collect();
        let opener = &self.opener;
        let mut done: Vec<Refreshed> = futures::stream::iter(ports)
            .map(|port| async move {
                let status = match port.refresh(opener).await? {
                    Ok(()) => "ready".to_string(),
                    Err(problem) => format!("unavailable: {}", problem.describe_without_subject()),
                };
                Some(Refreshed {
                    port: port.info.name.to_string(),
                    source: port.info.source.clone().unwrap_or_default(),
                    status,
                })
            })
            .buffer_unordered(REFRESH_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        done.sort_by(|a, b| a.port.cmp(&b.port));
        Ok(done)
    }
}

/// `CALL mesh.refresh()` → `Some(Ok(None))`, `CALL mesh.refresh('crm')` →
/// `Some(Ok(Some("crm")))`, other statements → None.
pub fn refresh_call(sql: &str) -> Option<Result<Option<String>, String>> {
    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement as SqlStatement, Value,
    };
    let statements = Vec::from(DFParser::parse_sql(sql).ok()?);
    let [Statement::Statement(statement)] = statements.as_slice() else {
        return None;
    };
    let SqlStatement::Call(call) = statement.as_ref() else {
        return None;
    };
    if !call.name.to_string().eq_ignore_ascii_case("mesh.refresh") {
        return None;
    }
    let usage = "usage: CALL mesh.refresh() or CALL mesh.refresh('source')";
    let args = match &call.args {
        FunctionArguments::None => return Some(Ok(None)),
        FunctionArguments::List(list) => &list.args,
        FunctionArguments::Subquery(_) => return Some(Err(usage.to_string())),
    };
    Some(match args.as_slice() {
        [] => Ok(None),
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => match &v.value {
            Value::SingleQuotedString(name) => Ok(Some(name.clone())),
            _ => Err(usage.to_string()),
        },
        _ => Err(usage.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::refresh_call;

    #[test]
    fn recognises_only_the_refresh_call() {
        assert_eq!(refresh_call("CALL mesh.refresh()"), Some(Ok(None)));
        assert_eq!(
            refresh_call("call MESH.REFRESH('crm');"),
            Some(Ok(Some("crm".to_string())))
        );
        assert!(matches!(refresh_call("CALL mesh.refresh(1)"), Some(Err(_))));
        assert_eq!(refresh_call("CALL other.proc()"), None);
        assert_eq!(refresh_call("SELECT 1"), None);
    }
}
