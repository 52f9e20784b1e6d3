//! A scheduler and executors with leakless's codec installed: as processes
//! (`leakless-cluster scheduler`, `executor`) or inside a test's process.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::SessionStateBuilder;

use crate::LeaklessCodec;
use crate::engine::session_config;

/// How a scheduler process runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// and its tasks run again elsewhere.
    pub executor_timeout_seconds: u64,
}

/// Runs a scheduler until the process ends.
pub async fn scheduler(options: SchedulerOptions) -> anyhow::Result<()> {
    let mut config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.bind.ip().to_string(),
        executor_timeout_seconds: options.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (options.executor_timeout_seconds / 3).max(1),
        no_executors_grace_period_seconds: options.executor_timeout_seconds,
        // Executors ask for work when a slot is free (see `executor`).
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        ..SchedulerConfig::default()
    };
    config.override_physical_codec = Some(LeaklessCodec::shared());
    config.override_config_producer = Some(Arc::new(session_config));
    let cluster = BallistaCluster::new_from_config(&config).await?;
    start_server(cluster, options.bind, Arc::new(config)).await?;
    Ok(())
}

/// How an executor process runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler: SocketAddr,
    /// Where shuffle data is served from (Arrow Flight).
    pub bind: SocketAddr,
    /// Where the scheduler launches tasks (gRPC).
    pub grpc_port: u16,
    pub work_dir: std::path::PathBuf,
    pub concurrent_tasks: usize,
    pub heartbeat_seconds: u64,
}

/// Runs an executor until the process ends.
pub async fn executor(options: ExecutorOptions) -> anyhow::Result<()> {
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: Some(options.bind.ip().to_string()),
        port: options.bind.port(),
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.ip().to_string(),
        scheduler_port: options.scheduler.port(),
        vcores: options.concurrent_tasks.max(1),
        work_dir: Some(options.work_dir.display().to_string()),
        executor_heartbeat_interval_seconds: options.heartbeat_seconds.max(1),
        override_physical_codec: Some(LeaklessCodec::shared()),
        override_config_producer: Some(Arc::new(session_config)),
        // Pulled, not pushed: an executor asks for work when a slot of its
        // own is free. Pushed, Ballista 55 loses the slot of a task it
        // cancels while rolling back the stages of a lost executor (the
        // task's final status is ignored), and a cluster whose slots all
        // went that way waits forever; pulled, such a job fails, and the
        // client runs it again (`Cluster`).
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

/// A scheduler and `executors` executors inside this process (for tests),
/// each executor running up to `concurrent_tasks` tasks; returns the
/// scheduler's address.
pub async fn in_process(executors: usize, concurrent_tasks: usize) -> anyhow::Result<SocketAddr> {
    let config = session_config();
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    let address =
        ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state).await?;
    for _ in 0..executors {
        let scheduler =
            SchedulerGrpcClient::connect(format!("http://localhost:{}", address.port())).await?;
        ballista_executor::new_standalone_executor_from_state(scheduler, concurrent_tasks, &state)
            .await?;
    }
    let _ = state.config().ballista_physical_extension_codec();
    Ok(address)
}
