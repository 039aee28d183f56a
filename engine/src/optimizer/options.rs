//! `meshql.*` session settings: each of meshql's plan rewrites can be switched off for a
//! session (`SET meshql.shared_subplans = false`) and shows in `SHOW ALL`; the process
//! flags (`--no-shared-subplans`, ...) set the defaults. A rewrite switched off leaves
//! the plan as DataFusion made it, so the results must not change: the differential
//! tests run every suite with each one off.

use std::ops::{Deref, DerefMut};

use datafusion::common::extensions_options;
use datafusion::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};

extensions_options! {
    /// meshql's session settings.
    pub struct Settings {
        /// Compute a subplan that occurs more than once (a CTE read twice) once.
        pub shared_subplans: bool, default = true
        /// Pass join keys down through aggregates to the scans below them.
        pub keys_past_aggregates: bool, default = true
        /// Evaluate a filter's cheap conditions first.
        pub cheap_conditions_first: bool, default = true
        /// Decimal arithmetic without a per-row overflow check where it cannot overflow.
        pub decimal_arithmetic: bool, default = true
        /// `LIKE '%a%b%'` by substring search.
        pub like_by_segments: bool, default = true
        /// Evaluate a filter's later conditions on the rows that passed the earlier ones.
        pub conditions_on_survivors: bool, default = true
        /// Apply a join's keys at lake scans whose rows meet other work before the join.
        pub join_keys_at_distant_scans: bool, default = true
        /// Remote scans probed by a join wait for its keys and send them to the source.
        pub remote_scans_wait_for_join_keys: bool, default = true
        /// Send remote sources whole single-source subplans (joins, aggregates, sorts).
        pub subplan_pushdown: bool, default = true
        /// Seconds a statement may run in this session; 0 = the server's timeout. It can
        /// only be lowered: a larger value is refused.
        pub statement_timeout_s: u64, default = 0
    }
}

/// [`Settings`] under the `meshql.` prefix. DataFusion's `extensions_options!` lists an
/// extension's entries without its prefix (`shared_subplans`), so `SHOW
/// meshql.shared_subplans` fails and `information_schema.df_settings` shows bare names;
/// this wrapper lists them with it. No upstream issue yet (DataFusion 55.2, config.rs
/// "The prefix is not used for extensions"): file one, and drop the wrapper once the
/// macro's entries carry the prefix.
#[derive(Debug, Clone, Default)]
pub struct MeshqlOptions(Settings);

impl Deref for MeshqlOptions {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.0
    }
}

impl DerefMut for MeshqlOptions {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.0
    }
}

impl ExtensionOptions for MeshqlOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        self.0.set(key, value)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.0
            .entries()
            .into_iter()
            .map(|mut e| {
                e.key = format!("{}.{}", Self::PREFIX, e.key);
                e
            })
            .collect()
    }
}

impl ConfigExtension for MeshqlOptions {
    const PREFIX: &'static str = "meshql";
}

impl MeshqlOptions {
    /// The session's settings (the defaults where none are registered).
    pub fn of(config: &ConfigOptions) -> MeshqlOptions {
        config
            .extensions
            .get::<MeshqlOptions>()
            .cloned()
            .unwrap_or_default()
    }

    /// The switchable rewrites: setting name and whether it is on.
    pub fn rules(&self) -> [(&'static str, bool); 9] {
        [
            ("shared_subplans", self.shared_subplans),
            ("keys_past_aggregates", self.keys_past_aggregates),
            ("cheap_conditions_first", self.cheap_conditions_first),
            ("decimal_arithmetic", self.decimal_arithmetic),
            ("like_by_segments", self.like_by_segments),
            ("conditions_on_survivors", self.conditions_on_survivors),
            (
                "join_keys_at_distant_scans",
                self.join_keys_at_distant_scans,
            ),
            (
                "remote_scans_wait_for_join_keys",
                self.remote_scans_wait_for_join_keys,
            ),
            ("subplan_pushdown", self.subplan_pushdown),
        ]
    }
}

/// The names of the switchable rewrites, as `SET meshql.NAME` takes them.
pub fn rule_settings() -> Vec<&'static str> {
    MeshqlOptions::default()
        .rules()
        .iter()
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionConfig;

    #[test]
    fn settings_are_read_from_the_session() {
        let mut config = SessionConfig::new().with_option_extension(MeshqlOptions::default());
        config
            .options_mut()
            .set("meshql.like_by_segments", "false")
            .unwrap();
        let options = MeshqlOptions::of(config.options());
        assert!(!options.like_by_segments);
        assert!(options.shared_subplans);
        assert!(
            config
                .options_mut()
                .set("meshql.no_such_rule", "false")
                .is_err()
        );
        assert_eq!(rule_settings().len(), 9);
        let keys: Vec<String> = config
            .options()
            .entries()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert!(
            keys.contains(&"meshql.like_by_segments".to_string()),
            "{keys:?}"
        );
    }
}
