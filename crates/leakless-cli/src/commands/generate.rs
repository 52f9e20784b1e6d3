//! `leakless generate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use leakless::synth::{Generated, OutputFormat, Params, generate};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
}

/// Sizes of the simulated marketplace; listings and users scale from
/// --impressions unless given.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for impressions.*, clicks.*, listings.* and _generator.json
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    sizes: Sizes,
    /// Print the realised totals as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct Sizes {
    /// Impressions to generate
    #[arg(long, default_value_t = 1_000_000)]
    pub impressions: u64,
    /// Listings (default: 1 % of impressions)
    #[arg(long)]
    pub listings: Option<u64>,
    /// Users (default: 10 % of impressions)
    #[arg(long)]
    pub users: Option<u64>,
    /// Days of traffic
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// First day (UTC), YYYY-MM-DD
    #[arg(long, default_value = "2026-10-01")]
    pub start: String,
    /// Seed: the same seed and sizes give the same bytes
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// File format
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
}

impl Sizes {
    pub fn params(&self) -> anyhow::Result<Params> {
        let mut params = Params::new(self.impressions);
        if let Some(n) = self.listings {
            params.listings = n;
        }
        if let Some(n) = self.users {
            params.users = n;
        }
        params.days = self.days;
        params.seed = self.seed;
        params.format = match self.format {
            Format::Csv => OutputFormat::Csv,
            Format::Parquet => OutputFormat::Parquet,
        };
        params.start = match leakless::time::parse_date(&self.start) {
            Some(t) => t,
            None => bail!("--start {:?} is not a date like 2026-10-01", self.start),
        };
        Ok(params)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let params = args.sizes.params()?;
    let started = Instant::now();
    let generated = generate(&params, &args.out)?;
    report(&generated, started.elapsed().as_secs_f64());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&generated.totals)?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn report(generated: &Generated, seconds: f64) {
    let t = &generated.totals;
    eprintln!(
        "generated `{}`: {} impressions, {} clicks, {} listings in {seconds:.2} s ({:.0} impressions/s)",
        generated.dir.display(),
        t.impressions,
        t.clicks,
        t.listings,
        t.impressions as f64 / seconds.max(1e-9)
    );
    eprintln!(
        "  click-through within 24 h: {:.2} %; label rate (any click on the listing within 24 h): {:.2} %",
        t.own_click_within_24h_rate * 100.0,
        t.label_rate_24h * 100.0
    );
    eprintln!(
        "  top 1 % of listings: {:.1} % of impressions; build with --watermark {}",
        t.top_1pct_listing_impression_share * 100.0,
        t.watermark
    );
}
