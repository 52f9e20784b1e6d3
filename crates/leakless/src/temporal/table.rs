//! [`PointInTimeTable`]: the operator as a table, so that DataFrame plans
//! (the listings join, projections) can be built on top of it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use super::PointInTimeExec;
use crate::spec::TemporalSpec;

/// A table whose scan is a [`PointInTimeExec`] over the scans of two tables.
#[derive(Debug)]
pub struct PointInTimeTable {
    events: Arc<dyn TableProvider>,
    spine: Arc<dyn TableProvider>,
    spec: TemporalSpec,
    schema: SchemaRef,
}

impl PointInTimeTable {
    pub fn try_new(
        events: Arc<dyn TableProvider>,
        spine: Arc<dyn TableProvider>,
        spec: TemporalSpec,
    ) -> Result<Self> {
        // Derive the schema the way the operator does, on empty inputs.
        let empty = |t: &Arc<dyn TableProvider>| {
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(t.schema()))
                as Arc<dyn ExecutionPlan>
        };
        let schema =
            PointInTimeExec::try_new(empty(&events), empty(&spine), spec.clone())?.schema();
        Ok(PointInTimeTable {
            events,
            spine,
            spec,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for PointInTimeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let events = self.events.scan(state, None, &[], None).await?;
        let spine = self.spine.scan(state, None, &[], None).await?;
        let exec: Arc<dyn ExecutionPlan> =
            Arc::new(PointInTimeExec::try_new(events, spine, self.spec.clone())?);
        let Some(projection) = projection else {
            return Ok(exec);
        };
        let exprs = projection.iter().map(|&i| {
            let name = self.schema.field(i).name().clone();
            (Arc::new(Column::new(&name, i)) as _, name)
        });
        Ok(Arc::new(ProjectionExec::try_new(exprs, exec)?))
    }
}
