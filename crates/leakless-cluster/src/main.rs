//! `leakless-cluster`: a Ballista scheduler, an executor, or a build whose
//! plan runs on them. Exit codes as `leakless`: 0 success, 2 usage, input
//! or internal error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leakless_cluster::Cluster;
use leakless_cluster::serve::{self, ExecutorOptions, SchedulerOptions};

#[derive(Debug, Parser)]
#[command(
    name = "leakless-cluster",
    version,
    about = "leakless on an Apache DataFusion Ballista cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler: it plans each build into tasks and hands them to
    /// the executors.
    Scheduler(SchedulerArgs),
    /// Run an executor: it runs the tasks the scheduler gives it.
    Executor(ExecutorArgs),
    /// Build a dataset on the cluster: the same flags and the same bytes as
    /// `leakless build`. Every executor must see the inputs and the run's
    /// staging folder at the client's paths (one machine, or a shared file
    /// system; s3:// inputs are copied once into the staging).
    Build(Box<BuildArgs>),
}

#[derive(Debug, clap::Args)]
struct SchedulerArgs {
    /// Where executors and clients reach the scheduler
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// and its tasks run again on the others
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    executor_timeout: u64,
}

#[derive(Debug, clap::Args)]
struct ExecutorArgs {
    /// The scheduler's address
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    scheduler: SocketAddr,
    /// Where other executors fetch this one's shuffle data
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
    bind: SocketAddr,
    /// The port the scheduler would push tasks to (default: the --bind
    /// port + 1); unused while executors pull their tasks, as they do
    #[arg(long, value_name = "PORT", hide = true)]
    grpc_port: Option<u16>,
    /// Where shuffle data is kept while a job runs
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// Tasks run at once (default: the number of cores)
    #[arg(long, value_name = "N")]
    concurrent_tasks: Option<usize>,
    /// Seconds between heartbeats to the scheduler
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    heartbeat: u64,
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The scheduler's address
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Executors fetch every shuffle partition over the network, even their own
    #[arg(long, hide = true)]
    remote_shuffle_reads: bool,
    /// Split the work by output day only: every task reads every input and
    /// builds every index (no shuffle), instead of the split by key
    #[arg(long)]
    by_output_bucket: bool,
    /// Spread the spine rows of keys with a large share of the spine over
    /// several tasks (auto), or keep each key in one task (off)
    #[arg(long, value_name = "MODE", default_value = "auto", value_parser = ["auto", "off"])]
    hot_keys: String,
    #[command(flatten)]
    build: leakless_cli::commands::build::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The scheduler and executors log what Ballista does (RUST_LOG, default
    // `info`); a build logs only warnings.
    let default = match cli.command {
        Command::Build(_) => "warn",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => leakless_cli::report_error(&err),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    leakless_cli::limit_malloc_arenas();
    leakless_cli::raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Scheduler(args) => {
            runtime.block_on(serve::scheduler(SchedulerOptions {
                bind: args.bind,
                executor_timeout_seconds: args.executor_timeout.max(1),
            }))?;
        }
        Command::Executor(args) => {
            std::fs::create_dir_all(&args.work_dir)?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            runtime.block_on(serve::executor(ExecutorOptions {
                scheduler: args.scheduler,
                bind: args.bind,
                grpc_port: match args.grpc_port {
                    Some(port) => port,
                    None => args.bind.port().checked_add(1).ok_or_else(|| {
                        anyhow::anyhow!("--bind port 65535 leaves no next port: give --grpc-port")
                    })?,
                },
                work_dir: args.work_dir,
                concurrent_tasks: args.concurrent_tasks.unwrap_or(cores),
                heartbeat_seconds: args.heartbeat,
            }))?;
        }
        Command::Build(args) => {
            let mut cluster = Cluster::new(&args.scheduler)
                .with_split_by_key(!args.by_output_bucket)
                .with_hot_keys(match args.hot_keys.as_str() {
                    "off" => leakless::HotKeys::Off,
                    _ => leakless::HotKeys::Auto,
                });
            if args.remote_shuffle_reads {
                cluster = cluster.with_remote_shuffle_reads();
            }
            return runtime.block_on(leakless_cli::commands::build::run_on(args.build, &cluster));
        }
    }
    Ok(ExitCode::SUCCESS)
}
