//! `leakless build`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use leakless::{Build, BuildSummary};

use crate::reporter::Progress;

/// Either `--spec SPEC.toml` (any sources, features and labels), or the
/// marketplace shorthand `--impressions --clicks --listings` (the built-in
/// spec of examples/marketplace/leakless.toml). Inputs are a CSV file (with
/// header), a Parquet file, a folder of them, or a glob. Timestamps without
/// an offset are UTC.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec file (TOML): sources, spine, features, labels
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["impressions", "clicks", "listings"])]
    spec: Option<PathBuf>,
    /// Replace a source's path for this run (repeatable): NAME=PATH
    #[arg(long = "source", value_name = "NAME=PATH", requires = "spec")]
    sources: Vec<String>,
    /// Shorthand: impressions (impression_id, user_id, listing_id, impression_ts)
    #[arg(long, value_name = "PATH", requires_all = ["clicks", "listings"])]
    impressions: Option<PathBuf>,
    /// Shorthand: clicks (listing_id, click_ts; other columns are ignored)
    #[arg(long, value_name = "PATH", requires_all = ["impressions", "listings"])]
    clicks: Option<PathBuf>,
    /// Shorthand: listings (listing_id, category, price, created_ts)
    #[arg(long, value_name = "PATH", requires_all = ["impressions", "clicks"])]
    listings: Option<PathBuf>,
    /// The dataset folder to write (partition folders of Parquet files and _manifest.json)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// What to write: `parquet` (files and _manifest.json, replaced whole),
    /// or `delta` (a Delta Lake table, one version per build); default:
    /// the spec's `[output] format`, else parquet
    #[arg(long, value_name = "FORMAT", value_parser = ["parquet", "delta"])]
    format: Option<String>,
    /// Time up to which label sources are complete (RFC 3339, UTC without
    /// offset); default: the spec's `watermark`, else each label source's
    /// largest event time. Rows whose label windows end after it are held back.
    #[arg(long, value_name = "TIMESTAMP")]
    watermark: Option<String>,
    /// Without a watermark, refuse a label source whose latest event is
    /// more than this after the spine's last time (e.g. 7d, 36h)
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    watermark_margin: String,
    /// Replace an existing dataset at --out (only one leakless wrote)
    #[arg(long)]
    overwrite: bool,
    /// Leave input files matching GLOB out of folder inputs (repeatable;
    /// without `/` it matches a file name at any depth); any other file
    /// that is not .csv, .csv.gz, .csv.zst or .parquet is an error
    #[arg(long, value_name = "GLOB")]
    ignore: Vec<String>,
    /// When another run is writing --out, wait for it instead of failing
    #[arg(long)]
    wait: bool,
    /// A row that cannot be read: `fail` stops the run naming it;
    /// `quarantine` sets it aside in DATASET/_quarantine/SOURCE.parquet and
    /// goes on (exit 1, nothing published, above --max-bad-rows)
    #[arg(long, value_name = "POLICY", default_value = "fail", value_parser = ["fail", "quarantine"])]
    bad_rows: String,
    /// Under quarantine, the largest fraction of each source's rows that
    /// may be bad (default: each source's `max_bad_rows`, else 0.001)
    #[arg(long, value_name = "FRACTION")]
    max_bad_rows: Option<f64>,
    /// Publish the dataset even when a `[checks]` bound fails (the exit
    /// code is still 1)
    #[arg(long)]
    publish_on_failed_checks: bool,
    /// Add to the dataset at --out (built from the same spec): compute only
    /// the partitions whose inputs changed, that are new, or whose labels
    /// matured since; carry the others over. The same bytes as a full build
    #[arg(long)]
    incremental: bool,
    /// With --incremental: list the partitions that would be computed again
    /// and why, and build nothing
    #[arg(long, requires = "incremental")]
    dry_run: bool,
    /// Write no _profile.json (to measure its cost; [checks] still profile)
    #[arg(long, hide = true)]
    no_profile: bool,
    /// Spill the sorted spine to disk past this many bytes (for tests)
    #[arg(long, value_name = "BYTES", hide = true)]
    spill_bytes: Option<usize>,
    /// Bound memory: cut the keys into N shards and index only as many at
    /// once as there are partitions, passing rows between key groups
    /// through files in the staging folder (peak memory falls about as
    /// partitions / N; the output is the same)
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
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

/// `NAME=PATH` pairs of `--source`.
pub fn parse_overrides(sources: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    sources
        .iter()
        .map(|s| match s.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                Ok((name.to_owned(), PathBuf::from(path)))
            }
            _ => bail!("--source {s:?} is not NAME=PATH"),
        })
        .collect()
}

/// `leakless build`: the plan runs in this process.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    run_on(args, &leakless::pipeline::Embedded).await
}

/// A build whose plan runs on `engine` (this process, or a cluster).
pub async fn run_on(
    args: Args,
    engine: &dyn leakless::pipeline::Engine,
) -> anyhow::Result<ExitCode> {
    let watermark = match &args.watermark {
        None => None,
        Some(text) => match leakless::time::parse_timestamp_micros(text.as_bytes()) {
            Some(w) => Some(w),
            None => bail!(
                "--watermark {text:?} is not an RFC 3339 timestamp (e.g. 2026-10-31T00:00:00Z)"
            ),
        },
    };
    let margin = leakless::spec::parse_duration(&args.watermark_margin, true)
        .map_err(|e| anyhow::anyhow!("--watermark-margin: {e}"))?;
    if args.partitions == Some(0) {
        bail!("--partitions must be at least 1");
    }
    if let Some(f) = args.max_bad_rows.filter(|f| !(0.0..=1.0).contains(f)) {
        bail!("--max-bad-rows {f} is not a fraction of a source's rows (0 to 1)");
    }
    let bad_rows = match args.bad_rows.as_str() {
        "quarantine" => leakless::ingest::BadRowPolicy::Quarantine,
        _ => leakless::ingest::BadRowPolicy::Fail,
    };
    if args.max_bad_rows.is_some() && bad_rows == leakless::ingest::BadRowPolicy::Fail {
        bail!(
            "--max-bad-rows is the gate of --bad-rows quarantine; without it the first bad row stops the build"
        );
    }
    let build = match (&args.spec, &args.impressions, &args.clicks, &args.listings) {
        (Some(spec), _, _, _) => {
            let overrides = parse_overrides(&args.sources)?;
            Build::from_spec_file_with(spec, &args.out, &overrides, &args.ignore)?
        }
        (None, Some(i), Some(c), Some(l)) => {
            Build::new(i, c, l, &args.out).with_ignore(&args.ignore)
        }
        _ => bail!("give --spec SPEC.toml, or all of --impressions, --clicks and --listings"),
    };
    let progress = Arc::new(Progress::new(args.quiet));
    let mut build = build
        .with_watermark(watermark)
        .with_overwrite(args.overwrite)
        .with_wait(args.wait)
        .with_watermark_margin(margin)
        .with_ignore(&args.ignore)
        .with_bad_rows(bad_rows)
        .with_max_bad_rows(args.max_bad_rows)
        .with_publish_on_failed_checks(args.publish_on_failed_checks)
        .with_profile(!args.no_profile)
        .with_incremental(args.incremental)
        .with_reporter(progress.clone());
    if args.shards == Some(0) {
        bail!("--shards must be at least 1");
    }
    build = build.with_shards(args.shards);
    if let Some(n) = args.partitions {
        build = build.with_target_partitions(n);
    }
    if let Some(format) = args
        .format
        .as_deref()
        .and_then(leakless::spec::OutputFormat::parse)
    {
        build = build.with_format(format);
    }
    if let Some(bytes) = args.spill_bytes {
        build = build.with_spill_bytes(bytes);
    }
    if args.dry_run {
        let increment = build.dry_run().await;
        progress.finish();
        let increment = increment.with_context(|| format!("planning `{}`", args.out.display()))?;
        print_increment(&increment, true);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&increment)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let result = build.execute_on(engine).await;
    progress.finish();
    let summary = result.with_context(|| format!("building `{}`", args.out.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    print_summary(&summary, seconds);
    if let Some(increment) = &summary.increment {
        print_increment(increment, false);
    }
    if args.timings {
        print_timings(&summary);
    }
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["seconds"] = serde_json::json!((seconds * 1000.0).round() / 1000.0);
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    let failed: Vec<&leakless::quality::checks::Outcome> =
        summary.checks.iter().filter(|c| !c.passed).collect();
    if !failed.is_empty() {
        // Published anyway (--publish-on-failed-checks); still a failure.
        let failure = leakless::quality::checks::failure(&failed);
        eprintln!("error: {failure}");
        eprintln!("  (published because of --publish-on-failed-checks)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What an incremental build computes again and why (every partition
/// with its reasons when `all`, else the first few).
fn print_increment(increment: &leakless::incremental::Increment, all: bool) {
    if let Some(why) = &increment.full {
        eprintln!("incremental: a full build ({why})");
        return;
    }
    eprintln!(
        "incremental: {} partitions computed again, {} carried over",
        increment.recompute.len(),
        increment.carried.len()
    );
    for (source, files) in &increment.changed_files {
        for file in files {
            eprintln!("  {source}: {file}");
        }
    }
    let shown = if all { usize::MAX } else { 10 };
    for r in increment.recompute.values().take(shown) {
        eprintln!("  {}: {}", r.partition, r.reasons.join("; "));
    }
    if increment.recompute.len() > shown {
        eprintln!("  ... and {} more", increment.recompute.len() - shown);
    }
}

pub fn print_summary(s: &BuildSummary, seconds: f64) {
    let read: Vec<String> = s
        .rows_read
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    eprintln!(
        "built `{}`: {} rows in {} partitions ({} files) in {seconds:.2} s",
        s.out.display(),
        s.rows_written,
        s.partitions,
        s.files
    );
    eprintln!("  rows read: {}", read.join(", "));
    for (source, rows) in &s.reconciliation {
        let mut terms = Vec::new();
        if rows.quarantined > 0 {
            terms.push(format!("{} quarantined", rows.quarantined));
        }
        if let Some(spine) = rows.spine {
            let mut spine_terms = terms.clone();
            spine_terms.push(format!(
                "{} dropped by [spine] where",
                spine.filtered_by_where
            ));
            spine_terms.push(format!("{} held back", spine.held_back_immature));
            spine_terms.push(format!("{} written", spine.written));
            eprintln!(
                "    {source} (spine): {} = {}",
                rows.read,
                spine_terms.join(" + ")
            );
        }
        if let Some(uses) = rows.indexed {
            terms.push(format!("{} indexed", uses.indexed));
            terms.push(format!("{} without key or time", uses.no_key_or_time));
            terms.push(format!("{} dropped by where", uses.filtered_by_where));
            eprintln!(
                "    {source} (indexed): {} = {}",
                rows.read,
                terms.join(" + ")
            );
        }
    }
    for (source, q) in &s.quarantined {
        let reasons: Vec<String> = (q.summary.reasons.iter())
            .map(|(reason, n)| format!("{n} x {reason}"))
            .collect();
        eprintln!(
            "  quarantined: {} rows of {source} in {} ({})",
            q.summary.rows,
            q.path,
            reasons.join(", ")
        );
    }
    if !s.watermarks.is_empty() {
        let watermarks: Vec<String> = s
            .watermarks
            .iter()
            .map(|(label, w)| format!("{label} {w}"))
            .collect();
        eprintln!(
            "  held back: {} rows whose label windows are still open at the watermark ({})",
            s.immature_held_back,
            watermarks.join(", ")
        );
    }
    if !s.checks.is_empty() {
        let passed = s.checks.iter().filter(|c| c.passed).count();
        eprintln!(
            "  checks: {passed} of {} passed (every check, every partition)",
            s.checks.len()
        );
    }
    if let Some(version) = s.delta_version {
        eprintln!("  committed as version {version} of the Delta table");
    }
    if s.stale_removed > 0 {
        eprintln!("  removed {} folder(s) left by dead runs", s.stale_removed);
    }
    eprintln!("  ran on {} DataFusion partitions", s.target_partitions);
    if !s.key_groups.is_empty() {
        eprintln!(
            "  split by key, {} hot key(s) spread over several tasks; per task, largest / mean:",
            s.hot_keys
        );
        for g in &s.key_groups {
            eprintln!(
                "    ({}) {} tasks: spine rows {} / {:.0}, events {} / {:.0}, seconds {:.2} / {:.2}",
                g.key.join(", "),
                g.tasks,
                g.spine_rows_max,
                g.spine_rows_mean,
                g.events_max,
                g.events_mean,
                g.seconds_max,
                g.seconds_mean
            );
        }
    }
}

fn print_timings(s: &BuildSummary) {
    let t = &s.timings;
    eprintln!("  timings (s): total {:.3}", t.total);
    if t.hot_keys > 0.0 {
        eprintln!(
            "    hot keys           {:>8.3}  a sample of the spine",
            t.hot_keys
        );
    }
    eprintln!(
        "    compute            {:>8.3}  read, index, bucket, sort, probe, write",
        t.compute
    );
    eprintln!("      read indexed     {:>8.3}", t.read_indexed);
    eprintln!("      index build      {:>8.3}", t.index_build);
    eprintln!(
        "      spine read       {:>8.3}  read, parse, bucket by partition",
        t.spine
    );
    eprintln!("      sort (cpu)       {:>8.3}", t.sort);
    eprintln!("      probe (cpu)      {:>8.3}", t.probe);
    eprintln!("      encode (cpu)     {:>8.3}", t.encode);
    eprintln!("      profile (cpu)    {:>8.3}", t.profile);
    eprintln!("    commit             {:>8.3}", t.commit);
}
