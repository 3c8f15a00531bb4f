//! Sessions that federate: DataFusion's optimizer with the federation rule, and a query planner
//! that turns federated subplans into remote statements.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_federation::{FederatedQueryPlanner, FederationOptimizerRule};

/// DataFusion's optimizer rules followed by the federation rule.
///
/// The federation rule runs last, so filters, projections and limits have already been pushed
/// into the table scans of the subplans it hands to Databricks, and a local join with a remote
/// table only fetches the columns and rows it needs. (datafusion-federation's default position,
/// right after `scalar_subquery_to_join`, leaves every filter of a mixed query local, and its
/// scan renaming breaks aggregate names of tables registered under local names.)
fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    rules.push(Arc::new(FederationOptimizerRule::new()));
    rules
}

/// A session state with `config`, DataFusion's default features, the federation optimizer rule
/// and the federated query planner: tables of a [`DatabricksSource`](crate::DatabricksSource) in
/// [`PushdownMode::Full`](crate::PushdownMode::Full) are then federated.
pub fn federated_session_state(config: SessionConfig) -> SessionState {
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
