//! [`Cluster`]: a build's plan, run by a Ballista scheduler's executors.

use std::sync::Arc;

use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use leakless::HotKeys;
use leakless::pipeline::Engine;
use leakless::write::exec::task_error;

use crate::LeaklessCodec;

/// Runs a build's plan on the executors of the scheduler at `url`
/// (`http://host:port`): every output partition is one task, which
/// computes and writes its buckets and returns its report.
#[derive(Debug, Clone)]
pub struct Cluster {
    url: String,
    config: SessionConfig,
    split_by_key: bool,
    hot_keys: Option<HotKeys>,
}

impl Cluster {
    /// The scheduler at `address` (`host:port`, or a URL).
    pub fn new(address: &str) -> Self {
        let url = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        Cluster {
            url,
            config: session_config(),
            split_by_key: true,
            hot_keys: None,
        }
    }

    /// Runs builds split by key (`leakless::split`, the default): no task
    /// reads every input or holds an index of every key. `false`: split by
    /// output bucket, each task reading every input (no shuffle).
    pub fn with_split_by_key(mut self, split: bool) -> Self {
        self.split_by_key = split;
        self
    }

    /// Which keys a build split by key spreads over several partitions
    /// (default: the build's own choice, [`HotKeys::Auto`] unless set).
    pub fn with_hot_keys(mut self, hot: HotKeys) -> Self {
        self.hot_keys = Some(hot);
        self
    }

    /// Executors fetch every shuffle partition over the network, even one
    /// they hold themselves (as when they run on other machines).
    pub fn with_remote_shuffle_reads(mut self) -> Self {
        self.config = self
            .config
            .with_ballista_shuffle_reader_force_remote_read(true);
        self
    }
}

/// The session every part of the cluster uses: Ballista's, with our codec.
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_ballista_physical_extension_codec(LeaklessCodec::shared())
        .with_ballista_adaptive_query_planner(false)
        .with_ballista_coalesce_enabled(false)
}

impl Engine for Cluster {
    fn separate_partitions(&self) -> bool {
        true
    }

    fn split_by_key(&self) -> bool {
        self.split_by_key
    }

    fn hot_keys(&self) -> Option<HotKeys> {
        self.hot_keys
    }

    fn run(
        &self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, leakless::Result<Vec<RecordBatch>>> {
        Box::pin(async move {
            // The scheduler returns the final stage's one partition: the
            // reports of every task, gathered.
            let plan: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(plan));
            let codec = LeaklessCodec::default();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let session_id = format!("leakless-{}-{}", std::process::id(), now_nanos());
                let run = async {
                    let stream = execute_physical_plan::<PhysicalPlanNode>(
                        self.url.clone(),
                        &BallistaConfig::default(),
                        plan.clone(),
                        &codec,
                        session_id,
                        self.config.clone(),
                    )
                    .await?;
                    stream.try_collect::<Vec<_>>().await
                };
                let e = match run.await {
                    Ok(batches) => return Ok(batches),
                    Err(e) => e,
                };
                let text = e.to_string();
                // Shuffle files lost with an executor fail the job (see
                // `serve::executor`), as the task that read them told it:
                // the plan runs again, from the start. Every task writes
                // fixed names, so a run again writes the same bytes.
                if attempt < ATTEMPTS && lost_shuffle(&text) {
                    continue;
                }
                // A task's error comes back inside Ballista's message: told
                // as the task told it when it is one of ours.
                if let Some(message) = task_error(&text) {
                    return Err(leakless::Error::Task(message));
                }
                return Err(leakless::Error::from(e));
            }
        })
    }
}

/// How many times a job runs at most when shuffle files were lost.
const ATTEMPTS: usize = 3;

/// Whether a job failed because shuffle files could not be fetched (their
/// executor died).
fn lost_shuffle(text: &str) -> bool {
    text.contains("Shuffle fetch partition error") || text.contains("FetchFailed")
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
