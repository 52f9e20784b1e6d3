//! `leakless demo`: generate a marketplace, build its training dataset,
//! show what came out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use leakless::Build;
use leakless::synth::{OutputFormat, Params, generate};

use crate::reporter::Progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for the generated logs (DIR/data) and the dataset (DIR/dataset)
    #[arg(long, value_name = "DIR", default_value = "leakless-demo")]
    out: PathBuf,
    /// Impressions to generate
    #[arg(long, default_value_t = 200_000)]
    impressions: u64,
    /// No progress indicator
    #[arg(long, short)]
    quiet: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data = args.out.join("data");
    let dataset = args.out.join("dataset");
    let mut params = Params::new(args.impressions);
    params.format = OutputFormat::Csv;
    let started = Instant::now();
    let generated = tokio::task::spawn_blocking(move || generate(&params, &data)).await??;
    super::generate::report(&generated, started.elapsed().as_secs_f64());

    let watermark = leakless::time::parse_timestamp_micros(generated.totals.watermark.as_bytes());
    let progress = Arc::new(Progress::new(args.quiet));
    let started = Instant::now();
    // The marketplace spec plus the price as of each impression, beside the
    // data so that it can be run again with `leakless build --spec`.
    let spec = generated.dir.join("leakless.toml");
    let marketplace = include_str!("../../../../examples/marketplace/leakless.toml");
    std::fs::write(&spec, format!("{marketplace}{AS_OF_PRICE}"))?;
    let summary = Build::from_spec_file(&spec, &dataset)?
        .with_watermark(watermark)
        .with_overwrite(true)
        .with_reporter(progress.clone())
        .execute()
        .await;
    progress.finish();
    let summary = summary?;
    super::build::print_summary(&summary, started.elapsed().as_secs_f64());
    let positives = summary.positive_labels.get("clicked").copied().unwrap_or(0);
    let label_rate = positives as f64 / (summary.rows_written.max(1)) as f64;
    println!("logs:    {}", generated.dir.display());
    println!("dataset: {}", dataset.display());
    println!(
        "label rate: {:.2} % of {} rows (the generator expected {:.2} %)",
        label_rate * 100.0,
        summary.rows_written,
        generated.totals.label_rate_24h * 100.0
    );
    let (leaky, rows) = leakless::write::differing_rows(&dataset, "price", "price_as_of")?;
    println!(
        "snapshot leak: on {leaky} of {rows} rows ({:.1} %) the listings' current `price` is not the price in force at the impression; `price_as_of` (from listing_prices, as of t) is what the model could have known",
        leaky as f64 * 100.0 / rows.max(1) as f64
    );
    println!("spec:    {}", spec.display());
    println!("first rows:\n{}", leakless::write::preview(&dataset, 5)?);
    println!(
        "read it: python3 -c \"import pyarrow.dataset as ds; print(ds.dataset('{}', partitioning='hive').to_table())\"",
        dataset.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The as-of price added to `examples/marketplace/leakless.toml`, whose
/// paths are the generated files' names.
const AS_OF_PRICE: &str = r#"
[sources.listing_prices]
path = "listing_prices.csv"
key = "listing_id"
valid_from = "valid_from"
columns = { listing_id = "int64", price = "float64", valid_from = "timestamp" }

[features.price_as_of]
source = "listing_prices"
op = "lookup"
column = "price"
"#;
