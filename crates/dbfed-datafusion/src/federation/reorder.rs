//! Join reordering for federation: the inner joins of a query are regrouped so that the tables
//! of one warehouse form one subtree, which federation then sends as one statement.
//!
//! DataFusion keeps the join order of the query text: in `customer JOIN orders JOIN lineitem`
//! with `customer` local, the remote `orders ⋈ lineitem` is never a subtree of its own, so each
//! remote table is read separately and joined locally. [`GroupRemoteJoins`] flattens each tree of
//! inner equi-joins (through the column-pruning projections and filters between them) into its
//! inputs and predicates, and rebuilds it:
//!
//! 1. inputs of the same federation provider (warehouse + identity) are joined first, each group
//!    into as few connected subtrees as its join predicates allow;
//! 2. the resulting units are joined greedily, starting from the first local input and always
//!    with a unit connected to what is joined so far, local units first: local filters (a
//!    region, a segment) then shrink the local side before it meets the remote one, so its join
//!    keys become a small runtime filter on the remote statement;
//! 3. a projection restores the original columns and their order.
//!
//! Equi-join predicates are closed transitively (`a = b AND b = c` implies `a = c`, true for
//! inner joins where `NULL` never matches), so inputs connected only through a third one can
//! still be joined directly. The rewrite never changes a query's result: every predicate is
//! applied exactly once, as a join key, a join filter or (if nothing else fits) a filter on top.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality};
use datafusion::error::Result;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    Expr, Filter, Join, JoinConstraint, JoinType, LogicalPlan, Projection, binary_expr,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion_federation::get_table_source;

/// Regroups inner joins so that the inputs of one federation provider are adjacent (see the
/// module documentation). Runs before the federation rule.
#[derive(Debug, Default)]
pub struct GroupRemoteJoins;

impl OptimizerRule for GroupRemoteJoins {
    fn name(&self) -> &str {
        "group_remote_joins"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        regroup(plan)
    }
}

/// Rewrites every join region of `plan`, innermost regions (inside the region's inputs) first.
fn regroup(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if !is_flat_join(&plan) {
        return plan.map_children(regroup);
    }
    let mut region = Region::default();
    region.collect(plan.clone());
    let mut changed = false;
    let mut inputs = Vec::with_capacity(region.inputs.len());
    for input in std::mem::take(&mut region.inputs) {
        let t = regroup(input)?;
        changed |= t.transformed;
        inputs.push(t.data);
    }
    region.inputs = inputs;
    match region.rebuild(&plan)? {
        Some(rebuilt) => Ok(Transformed::yes(rebuilt)),
        None if changed => {
            // Only inner regions changed: put them back into the original tree.
            let mut inputs = region.inputs.into_iter();
            replace_inputs(plan, &mut inputs).map(Transformed::yes)
        }
        None => Ok(Transformed::no(plan)),
    }
}

/// `plan` with the inputs of its join region replaced, in order, by `inputs`.
fn replace_inputs(
    plan: LogicalPlan,
    inputs: &mut impl Iterator<Item = LogicalPlan>,
) -> Result<LogicalPlan> {
    if is_region_node(&plan) {
        let new: Vec<LogicalPlan> = plan
            .inputs()
            .into_iter()
            .cloned()
            .map(|i| replace_inputs(i, inputs))
            .collect::<Result<_>>()?;
        plan.with_new_exprs(plan.expressions(), new)
    } else {
        Ok(inputs.next().unwrap_or(plan))
    }
}

/// An inner equi-join that can be flattened: `ON` constraint, `NULL` never equal.
fn is_flat_join(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Join(j)
        if j.join_type == JoinType::Inner
            && j.join_constraint == JoinConstraint::On
            && j.null_equality == NullEquality::NullEqualsNothing
            && !j.null_aware)
}

/// A node inside a join region: a flat join, or a filter or a column-only projection over one.
fn is_region_node(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Join(_) => is_flat_join(plan),
        LogicalPlan::Filter(f) => is_region_node(&f.input),
        LogicalPlan::Projection(p) => {
            p.expr.iter().all(|e| matches!(e, Expr::Column(_))) && is_region_node(&p.input)
        }
        _ => false,
    }
}

/// A tree of inner joins flattened: its inputs (in the order of the original tree) and its
/// predicates.
#[derive(Default)]
struct Region {
    inputs: Vec<LogicalPlan>,
    /// `left = right` join keys.
    pairs: Vec<(Expr, Expr)>,
    /// Join filters and filters between the joins, split into conjuncts.
    filters: Vec<Expr>,
}

impl Region {
    fn collect(&mut self, plan: LogicalPlan) {
        if !is_region_node(&plan) {
            self.inputs.push(plan);
            return;
        }
        match plan {
            LogicalPlan::Join(join) => {
                self.collect(Arc::unwrap_or_clone(join.left));
                self.collect(Arc::unwrap_or_clone(join.right));
                self.pairs.extend(join.on);
                if let Some(filter) = join.filter {
                    self.filters.extend(split_conjunction_owned(filter));
                }
            }
            LogicalPlan::Filter(filter) => {
                self.collect(Arc::unwrap_or_clone(filter.input));
                self.filters
                    .extend(split_conjunction_owned(filter.predicate));
            }
            // A column-only projection only prunes: the rebuilt region projects at its root.
            LogicalPlan::Projection(projection) => {
                self.collect(Arc::unwrap_or_clone(projection.input));
            }
            other => self.inputs.push(other),
        }
    }

    /// The region rebuilt with the inputs of each federation provider grouped, under a
    /// projection to `original`'s columns; `None` when regrouping cannot help (fewer than
    /// three inputs, one source only, no remote input) or a predicate refers to a column no
    /// input provides.
    fn rebuild(&self, original: &LogicalPlan) -> Result<Option<LogicalPlan>> {
        let n = self.inputs.len();
        if n < 3 {
            return Ok(None);
        }
        let sources: Vec<Option<Source>> = self.inputs.iter().map(source_of).collect();
        if sources.iter().all(Option::is_none) || sources.iter().all(|s| *s == sources[0]) {
            return Ok(None);
        }
        let Some(mut graph) = Graph::new(self, original.schema().columns())? else {
            return Ok(None);
        };

        // 1. The inputs of each remote source, joined into connected subtrees.
        let mut units: Vec<Unit> = Vec::new();
        let mut grouped = vec![false; n];
        for i in 0..n {
            let Some(source) = &sources[i] else { continue };
            if grouped[i] {
                continue;
            }
            let mut members: Vec<usize> = (i..n)
                .filter(|&j| !grouped[j] && sources[j].as_ref() == Some(source))
                .collect();
            for &j in &members {
                grouped[j] = true;
            }
            while !members.is_empty() {
                let mut unit = graph.unit(members.remove(0), &self.inputs);
                while let Some(pos) = members
                    .iter()
                    .position(|&j| graph.connected(&unit.leaves, &[j]))
                {
                    let next = graph.unit(members.remove(pos), &self.inputs);
                    let joined = graph.join(unit, next)?;
                    unit = graph.prune(joined)?;
                }
                units.push(unit);
            }
        }
        for (i, done) in grouped.iter().enumerate() {
            if !done {
                units.push(graph.unit(i, &self.inputs));
            }
        }
        units.sort_by_key(|u| u.leaves.iter().min().copied().unwrap_or(usize::MAX));

        // 2. The units joined greedily: from the first local unit, connected units next,
        //    local ones first.
        let start = units.iter().position(|u| !u.remote).unwrap_or(0);
        let mut joined = units.remove(start);
        while !units.is_empty() {
            let connected: Vec<usize> = (0..units.len())
                .filter(|&k| graph.connected(&joined.leaves, &units[k].leaves))
                .collect();
            let pick = connected
                .iter()
                .copied()
                .find(|&k| !units[k].remote)
                .or_else(|| connected.first().copied())
                .unwrap_or(0);
            let next = units.remove(pick);
            joined = graph.join(joined, next)?;
            if !units.is_empty() {
                joined = graph.prune(joined)?;
            }
        }

        // 3. What no join applied (if anything) filters the result; the original columns.
        let mut plan = joined.plan;
        if let Some(rest) = conjunction(graph.leftovers()) {
            plan = LogicalPlan::Filter(Filter::try_new(rest, Arc::new(plan))?);
        }
        // An output column a pruning dropped for an equal one (`o_orderkey` for `l_orderkey`)
        // is that column under its name.
        let available = plan.schema().columns();
        let mut columns = Vec::new();
        for c in original.schema().columns() {
            if available.contains(&c) {
                columns.push(Expr::Column(c));
                continue;
            }
            let Some(equal) = available.iter().find(|k| graph.substitutes(&c, k)) else {
                return Ok(None);
            };
            columns.push(Expr::Column(equal.clone()).alias_qualified(c.relation.clone(), c.name));
        }
        Ok(Some(LogicalPlan::Projection(Projection::try_new(
            columns,
            Arc::new(plan),
        )?)))
    }
}

/// The federation provider behind every table an input reads, compared by name and compute
/// context; `None` for a local input (or one mixing providers).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    name: String,
    compute_context: Option<String>,
}

fn source_of(plan: &LogicalPlan) -> Option<Source> {
    let mut found: Option<Source> = None;
    let mut local = false;
    let _ = plan.apply(|node| {
        let LogicalPlan::TableScan(scan) = node else {
            if matches!(node, LogicalPlan::Extension(_)) {
                local = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            return Ok(TreeNodeRecursion::Continue);
        };
        let provider = match get_table_source(&scan.source) {
            Ok(Some(source)) => source.federation_provider(),
            _ => {
                local = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        };
        let source = Source {
            name: provider.name().to_owned(),
            compute_context: provider.compute_context(),
        };
        match &found {
            Some(seen) if *seen != source => {
                local = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            _ => found = Some(source),
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if local { None } else { found }
}

/// A joined part of the region: its plan, the inputs it holds, whether it is remote.
struct Unit {
    plan: LogicalPlan,
    leaves: Vec<usize>,
    remote: bool,
}

/// The predicates of a region and which inputs each one needs.
struct Graph {
    /// The input of every column.
    owner: HashMap<Column, usize>,
    /// Equivalence classes of the columns equated by plain `column = column` keys of one type.
    classes: UnionFind,
    /// Columns already equated by the joins built so far.
    applied: UnionFind,
    /// Column keys, by class root, for iteration in a stable order.
    class_members: Vec<Column>,
    /// Other keys (expressions, or columns of different types): (left, inputs, right, inputs).
    pairs: Vec<(Expr, Vec<usize>, Expr, Vec<usize>)>,
    pair_used: Vec<bool>,
    filters: Vec<(Expr, Vec<usize>)>,
    filter_used: Vec<bool>,
    remote: Vec<bool>,
    /// The columns the region returns.
    output: Vec<Column>,
    /// Whether each input column is nullable.
    nullable: HashMap<Column, bool>,
}

impl Graph {
    /// The predicates of `region`, or `None` when one refers to a column no input provides
    /// (an outer reference) or holds a subquery: such a region is left alone.
    fn new(region: &Region, output: Vec<Column>) -> Result<Option<Self>> {
        let mut owner = HashMap::new();
        let mut nullable = HashMap::new();
        for (i, input) in region.inputs.iter().enumerate() {
            for (qualifier, field) in input.schema().iter() {
                let column = Column::new(qualifier.cloned(), field.name());
                nullable.insert(column.clone(), field.is_nullable());
                owner.insert(column, i);
            }
        }
        let leaves_of = |e: &Expr| -> Option<Vec<usize>> {
            // A subquery's outer references are not among the expression's columns: moved to
            // another join, it could lose them. Such regions are left alone.
            if has_subquery(e) {
                return None;
            }
            let mut leaves = Vec::new();
            for column in e.column_refs() {
                let leaf = *owner.get(column)?;
                if !leaves.contains(&leaf) {
                    leaves.push(leaf);
                }
            }
            Some(leaves)
        };
        let mut graph = Graph {
            owner: HashMap::new(),
            classes: UnionFind::default(),
            applied: UnionFind::default(),
            class_members: Vec::new(),
            pairs: Vec::new(),
            pair_used: Vec::new(),
            filters: Vec::new(),
            filter_used: Vec::new(),
            remote: region
                .inputs
                .iter()
                .map(|i| source_of(i).is_some())
                .collect(),
            output,
            nullable,
        };
        for (left, right) in &region.pairs {
            let (Some(l), Some(r)) = (leaves_of(left), leaves_of(right)) else {
                return Ok(None);
            };
            match (left, right) {
                (Expr::Column(a), Expr::Column(b))
                    if same_type(&region.inputs, &owner, a, b) && owner[a] != owner[b] =>
                {
                    for c in [a, b] {
                        if graph.classes.add(c) {
                            graph.applied.add(c);
                            graph.class_members.push(c.clone());
                        }
                    }
                    graph.classes.union(a, b);
                }
                _ => graph.pairs.push((left.clone(), l, right.clone(), r)),
            }
        }
        for filter in &region.filters {
            let Some(leaves) = leaves_of(filter) else {
                return Ok(None);
            };
            graph.filters.push((filter.clone(), leaves));
        }
        graph.pair_used = vec![false; graph.pairs.len()];
        graph.filter_used = vec![false; graph.filters.len()];
        graph.owner = owner;
        Ok(Some(graph))
    }

    fn unit(&self, leaf: usize, inputs: &[LogicalPlan]) -> Unit {
        Unit {
            plan: inputs[leaf].clone(),
            leaves: vec![leaf],
            remote: self.remote[leaf],
        }
    }

    /// Whether a join key links inputs `a` with inputs `b`.
    fn connected(&self, a: &[usize], b: &[usize]) -> bool {
        let class_link = self.class_members.iter().any(|x| {
            a.contains(&self.owner[x])
                && self
                    .class_members
                    .iter()
                    .any(|y| b.contains(&self.owner[y]) && self.classes.same(x, y))
        });
        class_link
            || self.pairs.iter().enumerate().any(|(k, (_, l, _, r))| {
                !self.pair_used[k]
                    && ((subset(l, a) && subset(r, b)) || (subset(l, b) && subset(r, a)))
            })
    }

    /// One column of the class `root` per group of its columns in `leaves` that no join has
    /// equated yet.
    fn unequated(&self, root: &Column, leaves: &[usize]) -> Vec<Column> {
        let mut reps: Vec<Column> = Vec::new();
        for c in &self.class_members {
            if self.classes.find(c) == *root
                && leaves.contains(&self.owner[c])
                && !reps.iter().any(|r| self.applied.same(r, c))
            {
                reps.push(c.clone());
            }
        }
        reps
    }

    /// `left ⋈ right` with every key and filter that becomes applicable.
    fn join(&mut self, left: Unit, right: Unit) -> Result<Unit> {
        let mut on = Vec::new();
        // Keys from the equivalence classes: one per pair of not-yet-equated groups.
        let mut roots: Vec<Column> = Vec::new();
        for c in &self.class_members {
            let root = self.classes.find(c);
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        for root in roots {
            let l = self.unequated(&root, &left.leaves);
            let r = self.unequated(&root, &right.leaves);
            if let (Some(l0), Some(r0)) = (l.first(), r.first()) {
                for (a, b) in std::iter::once((l0, r0))
                    .chain(l.iter().skip(1).map(|a| (a, r0)))
                    .chain(r.iter().skip(1).map(|b| (l0, b)))
                {
                    on.push((Expr::Column(a.clone()), Expr::Column(b.clone())));
                    self.applied.union(a, b);
                }
            }
        }
        let both: Vec<usize> = left.leaves.iter().chain(&right.leaves).copied().collect();
        let mut filters = Vec::new();
        for (k, (l_expr, l, r_expr, r)) in self.pairs.iter().enumerate() {
            if self.pair_used[k] {
                continue;
            }
            if subset(l, &left.leaves) && subset(r, &right.leaves) {
                on.push((l_expr.clone(), r_expr.clone()));
            } else if subset(r, &left.leaves) && subset(l, &right.leaves) {
                on.push((r_expr.clone(), l_expr.clone()));
            } else if subset(l, &both) && subset(r, &both) {
                filters.push(binary_expr(
                    l_expr.clone(),
                    datafusion::logical_expr::Operator::Eq,
                    r_expr.clone(),
                ));
            } else {
                continue;
            }
            self.pair_used[k] = true;
        }
        for (k, (filter, leaves)) in self.filters.iter().enumerate() {
            if !self.filter_used[k] && subset(leaves, &both) {
                filters.push(filter.clone());
                self.filter_used[k] = true;
            }
        }
        let join = Join::try_new(
            Arc::new(left.plan),
            Arc::new(right.plan),
            on,
            conjunction(filters),
            JoinType::Inner,
            JoinConstraint::On,
            NullEquality::NullEqualsNothing,
            false,
        )?;
        Ok(Unit {
            plan: LogicalPlan::Join(join),
            leaves: both,
            remote: left.remote && right.remote,
        })
    }

    /// `unit` under a projection to the columns still needed: the region's output, the columns
    /// of predicates not applied yet, and join keys shared with inputs outside the unit (what
    /// the projections between DataFusion's joins kept; without it a pushed join would return
    /// its inner join keys too).
    fn prune(&self, unit: Unit) -> Result<Unit> {
        let inside = |c: &Column| self.owner.get(c).is_some_and(|o| unit.leaves.contains(o));
        let mut keep: Vec<Column> = Vec::new();
        let mut add = |c: &Column| {
            if inside(c) && !keep.contains(c) {
                keep.push(c.clone());
            }
        };
        for (k, (l, _, r, _)) in self.pairs.iter().enumerate() {
            if !self.pair_used[k] {
                l.column_refs()
                    .into_iter()
                    .chain(r.column_refs())
                    .for_each(&mut add);
            }
        }
        for (k, (f, _)) in self.filters.iter().enumerate() {
            if !self.filter_used[k] {
                f.column_refs().into_iter().for_each(&mut add);
            }
        }
        for c in &self.class_members {
            let shared_outside = self
                .class_members
                .iter()
                .any(|d| self.classes.same(c, d) && (!inside(d) || !self.applied.same(c, d)));
            if shared_outside {
                add(c);
            }
        }
        // Output columns, one per set of columns the unit's joins made equal.
        for c in self.output.iter().filter(|c| inside(c)) {
            if !keep.contains(c) && !keep.iter().any(|k| self.substitutes(c, k)) {
                keep.push(c.clone());
            }
        }
        let columns = unit.plan.schema().columns();
        let mut exprs: Vec<Expr> = columns
            .iter()
            .filter(|c| keep.contains(c))
            .cloned()
            .map(Expr::Column)
            .collect();
        if exprs.len() == columns.len() {
            return Ok(unit);
        }
        if exprs.is_empty() {
            // Nothing is read above (e.g. `count(*)`): keep one column, a row needs one.
            exprs.extend(columns.first().cloned().map(Expr::Column));
        }
        Ok(Unit {
            plan: LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(unit.plan))?),
            ..unit
        })
    }

    /// Whether column `k` can stand for column `c`: the joins built so far made them equal, and
    /// they have the same type and nullability.
    fn substitutes(&self, c: &Column, k: &Column) -> bool {
        self.classes.add_known(c)
            && self.classes.add_known(k)
            && self.applied.same(c, k)
            && self.nullable.contains_key(c)
            && self.nullable.get(c) == self.nullable.get(k)
    }

    /// Predicates no join applied: equalities of class members never joined, unused keys and
    /// filters.
    fn leftovers(&mut self) -> Vec<Expr> {
        let mut rest = Vec::new();
        for (i, a) in self.class_members.iter().enumerate() {
            for b in &self.class_members[i + 1..] {
                if self.classes.same(a, b) && !self.applied.same(a, b) {
                    rest.push(Expr::Column(a.clone()).eq(Expr::Column(b.clone())));
                    self.applied.union(a, b);
                }
            }
        }
        for (k, (l, _, r, _)) in self.pairs.iter().enumerate() {
            if !self.pair_used[k] {
                rest.push(l.clone().eq(r.clone()));
            }
        }
        for (k, (f, _)) in self.filters.iter().enumerate() {
            if !self.filter_used[k] {
                rest.push(f.clone());
            }
        }
        rest
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::Exists(_) | Expr::InSubquery(_) | Expr::ScalarSubquery(_)
        ))
    })
    .unwrap_or(true)
}

fn subset(a: &[usize], b: &[usize]) -> bool {
    a.iter().all(|x| b.contains(x))
}

/// Whether columns `a` and `b` have the same data type in their inputs.
fn same_type(
    inputs: &[LogicalPlan],
    owner: &HashMap<Column, usize>,
    a: &Column,
    b: &Column,
) -> bool {
    let ty = |c: &Column| {
        let input = &inputs[*owner.get(c)?];
        input
            .schema()
            .qualified_field_from_column(c)
            .ok()
            .map(|(_, f)| f.data_type().clone())
    };
    matches!((ty(a), ty(b)), (Some(x), Some(y)) if x == y)
}

/// A union-find over columns.
#[derive(Default)]
struct UnionFind {
    parent: HashMap<Column, Column>,
}

impl UnionFind {
    /// Adds `c`; `true` if it was new.
    fn add(&mut self, c: &Column) -> bool {
        if self.parent.contains_key(c) {
            return false;
        }
        self.parent.insert(c.clone(), c.clone());
        true
    }

    /// Whether `c` was added.
    fn add_known(&self, c: &Column) -> bool {
        self.parent.contains_key(c)
    }

    fn find(&self, c: &Column) -> Column {
        let mut c = c.clone();
        while let Some(p) = self.parent.get(&c) {
            if *p == c {
                break;
            }
            c = p.clone();
        }
        c
    }

    fn same(&self, a: &Column, b: &Column) -> bool {
        self.find(a) == self.find(b)
    }

    fn union(&mut self, a: &Column, b: &Column) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::MemTable;
    use datafusion::optimizer::OptimizerContext;
    use datafusion::prelude::SessionContext;

    fn table(ctx: &SessionContext, name: &str, columns: &[&str]) {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(*c, DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|_| Arc::new(Int64Array::from(vec![1, 2])) as _)
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).expect("batch");
        let mem = MemTable::try_new(schema, vec![vec![batch]]).expect("mem table");
        ctx.register_table(name, Arc::new(mem)).expect("register");
    }

    #[tokio::test]
    async fn regions_without_remote_tables_are_left_alone() {
        let ctx = SessionContext::new();
        table(&ctx, "a", &["x"]);
        table(&ctx, "b", &["x", "y"]);
        table(&ctx, "c", &["y"]);
        let plan = ctx
            .sql("SELECT * FROM a JOIN b ON a.x = b.x JOIN c ON b.y = c.y WHERE a.x > 0")
            .await
            .expect("plans")
            .into_optimized_plan()
            .expect("optimizes");
        let out = GroupRemoteJoins
            .rewrite(plan.clone(), &OptimizerContext::new())
            .expect("rewrites");
        assert!(!out.transformed);
        assert_eq!(out.data, plan);
    }

    #[test]
    fn subqueries_are_detected_in_predicates() {
        use datafusion::logical_expr::{LogicalPlanBuilder, col, exists, lit};
        assert!(!has_subquery(&col("a").eq(lit(1))));
        let empty = LogicalPlanBuilder::empty(true).build().expect("plan");
        assert!(has_subquery(
            &col("a").eq(lit(1)).and(exists(Arc::new(empty)))
        ));
    }
}
