//! `leakless build`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use leakless::{Build, BuildSummary};

use crate::reporter::Progress;

/// Inputs: a CSV file (with header), a Parquet file, or a folder of them.
/// impressions need impression_id, user_id, listing_id, impression_ts;
/// clicks need listing_id, click_ts; listings need listing_id, category,
/// price, created_ts. Timestamps without an offset are UTC.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Impressions: impression_id, user_id, listing_id, impression_ts
    #[arg(long, value_name = "PATH")]
    impressions: PathBuf,
    /// Clicks: listing_id, click_ts (other columns are ignored)
    #[arg(long, value_name = "PATH")]
    clicks: PathBuf,
    /// Listings: listing_id, category, price, created_ts
    #[arg(long, value_name = "PATH")]
    listings: PathBuf,
    /// The dataset folder to write (dt=YYYY-MM-DD/part-NNNNN.parquet and _manifest.json)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Time up to which clicks are complete (RFC 3339, UTC without offset);
    /// default: the largest click_ts. Impressions whose 24 h label window
    /// ends after it are held back.
    #[arg(long, value_name = "TIMESTAMP")]
    watermark: Option<String>,
    /// Replace an existing dataset at --out (only one leakless wrote)
    #[arg(long)]
    overwrite: bool,
    /// DataFusion partitions (default: the number of cores)
    #[arg(long, value_name = "N")]
    partitions: Option<usize>,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Print how long each stage took (stderr)
    #[arg(long)]
    timings: bool,
    /// No progress indicator
    #[arg(long, short)]
    quiet: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let watermark = match &args.watermark {
        None => None,
        Some(text) => match leakless::time::parse_timestamp_micros(text.as_bytes()) {
            Some(w) => Some(w),
            None => bail!(
                "--watermark {text:?} is not an RFC 3339 timestamp (e.g. 2026-10-31T00:00:00Z)"
            ),
        },
    };
    if args.partitions == Some(0) {
        bail!("--partitions must be at least 1");
    }
    let progress = Arc::new(Progress::new(args.quiet));
    let mut build = Build::new(&args.impressions, &args.clicks, &args.listings, &args.out)
        .with_watermark(watermark)
        .with_overwrite(args.overwrite)
        .with_reporter(progress.clone());
    if let Some(n) = args.partitions {
        build = build.with_target_partitions(n);
    }
    let started = Instant::now();
    let result = build.execute().await;
    progress.finish();
    let summary = result.with_context(|| format!("building `{}`", args.out.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    print_summary(&summary, seconds);
    if args.timings {
        print_timings(&summary);
    }
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["seconds"] = serde_json::json!((seconds * 1000.0).round() / 1000.0);
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_summary(s: &BuildSummary, seconds: f64) {
    let read: Vec<String> = s
        .rows_read
        .iter()
        .map(|(t, n)| format!("{} {n}", t.name()))
        .collect();
    eprintln!(
        "built `{}`: {} rows in {} dt partitions ({} files) in {seconds:.2} s",
        s.out.display(),
        s.rows_written,
        s.partitions,
        s.files
    );
    eprintln!("  rows read: {}", read.join(", "));
    eprintln!(
        "  held back: {} impressions whose 24 h label window is still open at the watermark {}",
        s.immature_held_back, s.watermark
    );
    eprintln!("  ran on {} DataFusion partitions", s.target_partitions);
}

fn print_timings(s: &BuildSummary) {
    let t = &s.timings;
    eprintln!("  timings (s): total {:.3}", t.total);
    eprintln!("    read listings      {:>8.3}", t.read_listings);
    eprintln!(
        "    compute (streamed) {:>8.3}  read+parse, index, probe, join, bucket",
        t.compute
    );
    eprintln!("      read clicks      {:>8.3}", t.read_clicks);
    eprintln!("      index build      {:>8.3}", t.index_build);
    eprintln!("      probe (cpu)      {:>8.3}", t.probe);
    eprintln!("    write              {:>8.3}", t.write);
    eprintln!("      sort (cpu)       {:>8.3}", t.sort);
    eprintln!("      encode (cpu)     {:>8.3}", t.encode);
    eprintln!("    commit             {:>8.3}", t.commit);
}
