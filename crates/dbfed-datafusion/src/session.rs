//! Sessions that federate: DataFusion's optimizer with the federation rule, and a query planner
//! that turns federated subplans into remote statements.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_federation::{FederatedQueryPlanner, FederationOptimizerRule};

use crate::federation::reorder::GroupRemoteJoins;
use crate::runtime_filter::DEFAULT_MAX_IN_LIST;

/// DataFusion's optimizer rules followed by the join regrouping and the federation rule.
///
/// The federation rule runs last, so filters, projections and limits have already been pushed
/// into the table scans of the subplans it hands to Databricks, and a local join with a remote
/// table only fetches the columns and rows it needs. (datafusion-federation's default position,
/// right after `scalar_subquery_to_join`, leaves every filter of a mixed query local, and its
/// scan renaming breaks aggregate names of tables registered under local names.)
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    // Same-warehouse tables made adjacent, so federation can push their join whole.
    rules.push(Arc::new(GroupRemoteJoins));
    rules.push(Arc::new(FederationOptimizerRule::new()));
    rules
}

/// Raises DataFusion's limits on the IN lists a hash join hands to the scan of its probe side
/// (`datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values`, default 150, and
/// `hash_join_inlist_pushdown_max_size`, default 128 KiB) to at least `max_values` values (and
/// 64 bytes per value): above them DataFusion hands over a hash-table lookup, which no SQL can
/// express, and a remote statement only gets the keys' bounds. Never lowers a limit.
pub(crate) fn allow_runtime_in_lists(options: &mut ConfigOptions, max_values: usize) {
    let optimizer = &mut options.optimizer;
    optimizer.hash_join_inlist_pushdown_max_distinct_values = optimizer
        .hash_join_inlist_pushdown_max_distinct_values
        .max(max_values);
    optimizer.hash_join_inlist_pushdown_max_size = optimizer
        .hash_join_inlist_pushdown_max_size
        .max(max_values.saturating_mul(64));
}

/// A session state with `config`, DataFusion's default features, the federation optimizer rules
/// and the federated query planner: tables of a [`DatabricksSource`](crate::DatabricksSource) in
/// [`PushdownMode::Full`](crate::PushdownMode::Full) are then federated.
///
/// DataFusion's limits on the join keys a hash join hands to a scan are raised to
/// [`DEFAULT_MAX_IN_LIST`] values (see [`DatabricksSourceBuilder::runtime_filter_max_values`](crate::DatabricksSourceBuilder::runtime_filter_max_values)),
/// so that up to that many local keys reach a remote statement.
pub fn federated_session_state(mut config: SessionConfig) -> SessionState {
    allow_runtime_in_lists(config.options_mut(), DEFAULT_MAX_IN_LIST);
    SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(optimizer_rules())
        .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
        .build()
}

/// A session context over [`federated_session_state`].
pub fn federated_session_context(config: SessionConfig) -> SessionContext {
    SessionContext::new_with_state(federated_session_state(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_federation_rule_runs_last() {
        let rules = optimizer_rules();
        assert_eq!(
            rules.last().map(|r| r.name()),
            Some("federation_optimizer_rule")
        );
        assert!(rules.len() > 10);
    }
}
