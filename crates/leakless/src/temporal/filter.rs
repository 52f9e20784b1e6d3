//! `where` snippets: SQL parsed and evaluated by DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::ingest::arrow_type;
use crate::spec::SourceDef;

/// A boolean SQL expression over a source's declared columns.
#[derive(Debug, Clone)]
pub struct FilterExpr {
    pub sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

impl FilterExpr {
    /// Parses `sql` against the declared columns of `source` (as they are
    /// after ingest: every timestamp in UTC µs).
    pub fn try_new(sql: &str, source: &SourceDef) -> Result<Self> {
        FilterExpr::for_schema(sql, declared_schema(source))
    }

    /// Parses `sql` against `schema` (a source's batches, every column
    /// taken as nullable).
    pub fn for_schema(sql: &str, schema: SchemaRef) -> Result<Self> {
        let schema = Arc::new(Schema::new(
            (schema.fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let ctx = SessionContext::new();
        let expr = ctx.parse_sql_expr(sql, &df_schema)?;
        // Output bytes depend on the inputs only: no random(), no now().
        expr.apply(|e| {
            if let Expr::ScalarFunction(f) = e
                && f.func.signature().volatility != Volatility::Immutable
            {
                return Err(DataFusionError::Plan(format!(
                    "`{}` gives a different answer from run to run; a filter must depend on the row only",
                    f.func.name()
                )));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        // Simplified first, as a query's plan would be: some functions
        // (`coalesce`, `arrow_cast`) only exist as rewrites of the
        // simplifier, and fail at evaluation without it.
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(df_schema.clone()))
                .build(),
        );
        let expr = simplifier.simplify(simplifier.coerce(expr, &df_schema)?)?;
        let physical = ctx.create_physical_expr(expr, &df_schema)?;
        let ty = physical.data_type(&schema)?;
        if ty != DataType::Boolean {
            return Err(DataFusionError::Plan(format!(
                "the expression is {ty}, not a boolean"
            )));
        }
        Ok(FilterExpr {
            sql: sql.to_owned(),
            expr: physical,
        })
    }

    /// Which rows of `batch` (in the declared schema) pass: true, never null.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let value = self.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let mask = value.as_boolean();
        Ok(if mask.null_count() == 0 {
            mask.clone()
        } else {
            mask.iter().map(|v| Some(v == Some(true))).collect()
        })
    }
}

/// The Arrow schema of a source's batches after ingest: its declared columns
/// in declared order, all nullable.
pub fn declared_schema(source: &SourceDef) -> SchemaRef {
    Arc::new(Schema::new(
        source
            .columns
            .iter()
            .flatten()
            .map(|c| Field::new(&c.name, arrow_type(c.ty.value_type()), true))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    /// Functions that DataFusion only knows as its simplifier's rewrites
    /// (`coalesce`, `arrow_cast`, `nvl`) evaluate like the others: the
    /// expression is simplified as a query's plan would be.
    #[test]
    fn functions_the_simplifier_rewrites_evaluate() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Float64Array::from(vec![Some(2.0), None, Some(0.5), None])),
                Arc::new(Int64Array::from(vec![Some(1), Some(5), None, Some(3)])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("b"),
                    Some("c"),
                ])),
            ],
        )
        .unwrap();
        let cases = [
            ("coalesce(x, 0) > 1", [true, false, false, false]),
            ("coalesce(x, n, 9) >= 3", [false, true, false, true]),
            ("arrow_cast(n, 'Float64') > 2.5", [false, true, false, true]),
            ("nvl(s, 'z') = 'z'", [false, true, false, false]),
            ("x > 1 or n = 3", [true, false, false, true]),
        ];
        for (sql, expected) in cases {
            let filter = FilterExpr::for_schema(sql, schema.clone())
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let mask = filter
                .evaluate(&batch)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let got: Vec<bool> = mask.iter().map(|v| v == Some(true)).collect();
            assert_eq!(got, expected, "{sql}");
        }
    }
}
