//! `samples.tpch`: the eight TPC-H tables generated in memory with Databricks column types
//! (BIGINT keys, DECIMAL(18,2) money, DATE, STRING, INT).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Decimal128Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use datafusion::catalog::MemTable;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use super::EngineError;

/// The TPC-H table names, in the order Databricks lists them.
pub(crate) const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// Rows per generated batch.
const BATCH_SIZE: usize = 8192;

/// Generates one table at `scale` split into `parts` partitions (generated in parallel).
pub(crate) fn generate(table: &str, scale: f64, parts: usize) -> Result<MemTable, EngineError> {
    // The two fixed-size tables are tiny: one partition.
    let parts = if matches!(table, "nation" | "region") {
        1
    } else {
        parts.max(1)
    };
    let part_count =
        i32::try_from(parts).map_err(|_| EngineError::Tpch("too many partitions".into()))?;
    let results: Vec<Result<Vec<RecordBatch>, EngineError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=part_count)
            .map(|part| scope.spawn(move || generate_part(table, scale, part, part_count)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Tpch(format!("generator of {table} panicked")))
                })
            })
            .collect()
    });
    let partitions = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let schema = databricks_schema(table)?;
    MemTable::try_new(schema, partitions).map_err(|e| EngineError::Tpch(format!("{table}: {e}")))
}

/// The Databricks schema of a TPC-H table (generator schema with money as `DECIMAL(18,2)`).
fn databricks_schema(table: &str) -> Result<SchemaRef, EngineError> {
    let generated = match table {
        "customer" => CustomerArrow::schema_ref(),
        "lineitem" => LineItemArrow::schema_ref(),
        "nation" => NationArrow::schema_ref(),
        "orders" => OrderArrow::schema_ref(),
        "part" => PartArrow::schema_ref(),
        "partsupp" => PartSuppArrow::schema_ref(),
        "region" => RegionArrow::schema_ref(),
        "supplier" => SupplierArrow::schema_ref(),
        other => return Err(EngineError::Tpch(format!("unknown TPC-H table {other}"))),
    };
    Ok(Arc::new(Schema::new(
        generated
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Decimal128(_, scale) => f
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Decimal128(18, *scale)),
                _ => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    )))
}

fn generate_part(
    table: &str,
    scale: f64,
    part: i32,
    parts: i32,
) -> Result<Vec<RecordBatch>, EngineError> {
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>> = match table {
        "customer" => Box::new(
            CustomerArrow::new(CustomerGenerator::new(scale, part, parts))
                .with_batch_size(BATCH_SIZE),
        ),
        "lineitem" => Box::new(
            LineItemArrow::new(LineItemGenerator::new(scale, part, parts))
                .with_batch_size(BATCH_SIZE),
        ),
        "nation" => Box::new(
            NationArrow::new(NationGenerator::new(scale, part, parts)).with_batch_size(BATCH_SIZE),
        ),
        "orders" => Box::new(
            OrderArrow::new(OrderGenerator::new(scale, part, parts)).with_batch_size(BATCH_SIZE),
        ),
        "part" => Box::new(
            PartArrow::new(PartGenerator::new(scale, part, parts)).with_batch_size(BATCH_SIZE),
        ),
        "partsupp" => Box::new(
            PartSuppArrow::new(PartSuppGenerator::new(scale, part, parts))
                .with_batch_size(BATCH_SIZE),
        ),
        "region" => Box::new(
            RegionArrow::new(RegionGenerator::new(scale, part, parts)).with_batch_size(BATCH_SIZE),
        ),
        "supplier" => Box::new(
            SupplierArrow::new(SupplierGenerator::new(scale, part, parts))
                .with_batch_size(BATCH_SIZE),
        ),
        other => return Err(EngineError::Tpch(format!("unknown TPC-H table {other}"))),
    };
    batches
        .map(|b| b.and_then(|b| to_databricks_types(&b)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Tpch(format!("{table}: {e}")))
}

/// Relabels `DECIMAL(15,2)` as Databricks' `DECIMAL(18,2)` (no data change; zero-copy).
fn to_databricks_types(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Decimal128(_, scale) => {
                let decimals = column
                    .as_any()
                    .downcast_ref::<Decimal128Array>()
                    .ok_or_else(|| ArrowError::CastError("expected decimals".into()))?
                    .clone()
                    .with_precision_and_scale(18, *scale)?;
                fields.push(
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(DataType::Decimal128(18, *scale)),
                );
                columns.push(Arc::new(decimals));
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::catalog::TableProvider;

    #[test]
    fn money_is_decimal_18_2_and_rows_are_complete() {
        let orders = generate("orders", 0.01, 3).expect("orders generate");
        let schema = orders.schema();
        assert_eq!(
            schema
                .field_with_name("o_totalprice")
                .expect("column")
                .data_type(),
            &DataType::Decimal128(18, 2)
        );
        assert_eq!(
            schema
                .field_with_name("o_orderkey")
                .expect("column")
                .data_type(),
            &DataType::Int64
        );
    }
}
