//! `where` snippets: SQL parsed and evaluated by DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, Volatility};
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
