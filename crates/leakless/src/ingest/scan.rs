//! [`ScanExec`]: a source's files as a DataFusion plan, one partition per
//! file, that serialises to bytes and back (for a cluster's executors).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use serde::{Deserialize, Serialize};

use super::{BadRowPolicy, ColumnSpec, InputFile, Layout, Source, UseRule};
use crate::spec::CsvOptions;

/// Reads a [`Source`]: partition `i` streams file `i` (parsed on a blocking
/// thread), in file order. A source without files has one empty partition.
#[derive(Debug)]
pub struct ScanExec {
    source: Source,
    cache: Arc<PlanProperties>,
}

/// What a scan is, on the wire: everything but the statistics of files
/// read, which each process gathers for itself.
#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    columns: Vec<ColumnSpec>,
    csv: CsvOptions,
    files: Vec<InputFile>,
    policy: BadRowPolicy,
    #[serde(default)]
    quarantine: Option<std::path::PathBuf>,
    #[serde(default)]
    uses: Vec<UseRule>,
    /// The time column's position (its range is in each file's statistics).
    #[serde(default)]
    time: Option<usize>,
}

impl ScanExec {
    pub fn new(source: Source) -> Self {
        let cache = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(source.layout.schema.clone()),
            Partitioning::UnknownPartitioning(source.files.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ScanExec { source, cache }
    }

    /// The source read, with the statistics of the files this instance
    /// has read to the end.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The node on the wire (an error for a path that is not UTF-8).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = &self.source.layout;
        serde_json::to_vec(&Wire {
            name: layout.name.clone(),
            columns: layout.columns.clone(),
            csv: layout.csv.clone(),
            files: self.source.files.to_vec(),
            policy: self.source.policy,
            quarantine: self.source.quarantine.clone(),
            uses: self.source.uses.clone(),
            time: layout.time,
        })
        .map_err(|e| DataFusionError::Internal(format!("encoding a ScanExec: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| DataFusionError::Internal(format!("decoding a ScanExec: {e}")))?;
        let mut layout = Layout::from_parts(wire.name, wire.columns, wire.csv);
        layout.time = wire.time;
        let mut source = Source::new(layout, wire.files, wire.policy).with_uses(wire.uses);
        source.quarantine = wire.quarantine;
        Ok(ScanExec::new(source))
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "ScanExec: source={} files={}",
            self.source.name(),
            self.source.files.len()
        )
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "ScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("ScanExec has no children".into()));
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema: SchemaRef = self.source.layout.schema.clone();
        if partition >= self.source.files.len() {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty::<Result<datafusion::arrow::array::RecordBatch>>(),
            )));
        }
        let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 2);
        let tx = builder.tx();
        let source = self.source.clone();
        let batch_rows = context.session_config().batch_size();
        builder.spawn_blocking(move || {
            let mut emit = |batch| tx.blocking_send(Ok(batch)).is_ok();
            source.read_file(partition, batch_rows, &mut emit)?;
            Ok(())
        });
        Ok(builder.build())
    }
}
