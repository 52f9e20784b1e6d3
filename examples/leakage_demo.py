"""What leakage does to a model, in numbers.

Generates a marketplace (impressions, clicks, listings with versioned
prices), then builds the training data two ways:

- leakless: every feature from events strictly before the impression, the
  price as of the impression (``leakless.build`` on a spec dict);
- the usual way, in Polars: aggregates over the whole log, a click window
  centred on the impression, the listing's price from today's snapshot.

Both get the same label (the marketplace spec's: the listing gets a click
within 24 h of the impression) and the
same model (scikit-learn's gradient boosting), trained on the first weeks.
Each is scored twice: offline, on a random holdout of those weeks (what a
notebook reports), and served, on the later days with the features as a
server computes them at request time (only the past exists there: the
point-in-time values). The leaky model looks best offline and is worst
served::

    pip install ./python scikit-learn matplotlib polars
    python examples/leakage_demo.py --impressions 2000000 --png docs/leakage_demo.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import leakless

FEATURES = [
    "listing_clicks_1h",
    "listing_clicks_24h",
    "listing_clicks_total",
    "listing_impressions_total",
    "user_clicks_total",
    "price",
    "listing_age_seconds",
    "category",
]

DAY_US = 86_400_000_000


def spec(data: Path) -> dict:
    """The point-in-time features and the label, as a spec dict."""
    return {
        "version": 1,
        "sources": {
            "impressions": {
                "path": str(data / "impressions.csv"),
                "time": "impression_ts",
                "columns": {
                    "impression_id": "int64",
                    "user_id": "int64",
                    "listing_id": "int64",
                    "impression_ts": "timestamp",
                },
            },
            "clicks": {
                "path": str(data / "clicks.csv"),
                "time": "click_ts",
                "columns": {"listing_id": "int64", "user_id": "int64", "click_ts": "timestamp"},
            },
            "listings": {
                "path": str(data / "listings.csv"),
                "key": "listing_id",
                "columns": {
                    "listing_id": "int64",
                    "category": "string",
                    "price": "float64",
                    "created_ts": "timestamp",
                },
            },
            "listing_prices": {
                "path": str(data / "listing_prices.csv"),
                "key": "listing_id",
                "valid_from": "valid_from",
                "columns": {"listing_id": "int64", "price": "float64", "valid_from": "timestamp"},
            },
        },
        "spine": {"source": "impressions", "columns": ["impression_id", "user_id", "listing_id"]},
        "features": {
            "listing_clicks_1h": {
                "source": "clicks", "key": "listing_id", "op": "count", "window": "1h",
            },
            "listing_clicks_24h": {
                "source": "clicks", "key": "listing_id", "op": "count", "window": "24h",
            },
            "listing_clicks_total": {
                "source": "clicks", "key": "listing_id", "op": "count", "window": "lifetime",
            },
            "listing_impressions_total": {
                "source": "impressions", "key": "listing_id", "op": "count", "window": "lifetime",
            },
            "user_clicks_total": {
                "source": "clicks", "key": "user_id", "op": "count", "window": "lifetime",
            },
            "price": {"source": "listing_prices", "op": "lookup", "column": "price"},
            "listing_age_seconds": {"source": "listings", "op": "time_since", "column": "created_ts"},
            "category": {"source": "listings", "op": "lookup", "column": "category"},
        },
        "labels": {
            "clicked": {
                "source": "clicks", "key": "listing_id", "op": "exists", "window": "24h",
            },
        },
    }


def leaky_features(data: Path):
    """The same columns the usual way: over the whole log, click windows
    centred on the impression (half the window either side), today's
    price."""
    import polars as pl

    ts = pl.Datetime("us")
    imps = pl.read_csv(data / "impressions.csv", schema_overrides={"impression_ts": ts})
    clicks = pl.read_csv(data / "clicks.csv", schema_overrides={"click_ts": ts})
    listings = pl.read_csv(data / "listings.csv", schema_overrides={"created_ts": ts})
    # Clicks on the listing up to a time: a running count, looked up as of.
    running = (
        clicks.sort("click_ts")
        .with_columns(n=pl.int_range(1, pl.len() + 1).over("listing_id"))
        .select("listing_id", "click_ts", "n")
    )

    def clicks_up_to(frame, at):
        return frame.sort(at).join_asof(  # sorted by time; `by` keys mixed
            running, left_on=at, right_on="click_ts", by="listing_id", strategy="backward"
        ).with_columns(pl.col("n").fill_null(0))

    def centred(frame, name, hours):
        """Clicks on the listing within `hours` / 2 either side."""
        half = pl.duration(minutes=30 * hours)
        window = frame.with_columns(
            hi=pl.col("impression_ts") + half,
            lo=pl.col("impression_ts") - half - pl.duration(microseconds=1),
        )
        window = clicks_up_to(window, "hi").rename({"n": "up_to_hi"}).drop("click_ts")
        window = clicks_up_to(window, "lo").rename({"n": "up_to_lo"})
        return window.select("impression_id", (pl.col("up_to_hi") - pl.col("up_to_lo")).alias(name))

    window = centred(imps, "listing_clicks_1h", 1).join(
        centred(imps, "listing_clicks_24h", 24), on="impression_id"
    )
    return (
        imps.join(window, on="impression_id")
        .join(clicks.group_by("listing_id").agg(listing_clicks_total=pl.len()), on="listing_id", how="left")
        .join(imps.group_by("listing_id").agg(listing_impressions_total=pl.len()), on="listing_id", how="left")
        .join(clicks.group_by("user_id").agg(user_clicks_total=pl.len()), on="user_id", how="left")
        .join(listings, on="listing_id", how="left")
        .with_columns(
            pl.col("listing_clicks_total", "listing_impressions_total", "user_clicks_total").fill_null(0),
            listing_age_seconds=(pl.col("impression_ts") - pl.col("created_ts")).dt.total_seconds(),
        )
        .select("impression_id", *FEATURES)
    )


def matrix(frame, categories):
    import numpy as np
    import polars as pl

    codes = {c: i for i, c in enumerate(categories)}
    x = frame.with_columns(
        pl.col("category").replace_strict(codes, default=-1, return_dtype=pl.Int64)
    ).select(FEATURES)
    return x.to_numpy().astype(np.float64)


def score(train, holdout, served, categories, seed):
    """Trains on `train`; AUC on `holdout` and on `served`."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    model = HistGradientBoostingClassifier(max_iter=150, random_state=seed)
    model.fit(matrix(train, categories), train["clicked"].to_numpy())

    def auc(frame):
        return roc_auc_score(frame["clicked"].to_numpy(), model.predict_proba(matrix(frame, categories))[:, 1])

    return auc(holdout), auc(served)


def run(impressions: int, seed: int, work: Path, train_days: int = 20) -> dict:
    """The demo: AUCs offline and served, for the leaky and the leakless
    training sets."""
    import polars as pl

    data = work / "market"
    totals = leakless.generate(data, impressions=impressions, seed=seed, days=30)
    summary = leakless.build(
        spec(data), work / "dataset", watermark=totals["watermark"], overwrite=True, progress=False
    )
    honest = leakless.to_polars(work / "dataset")
    start = honest["impression_ts"].min()
    day = ((pl.col("impression_ts") - pl.lit(start)).dt.total_microseconds() // DAY_US).alias("day")
    honest = honest.with_columns(day)
    # The same rows and labels, features the usual way.
    leaky = leaky_features(data).join(
        honest.select("impression_id", "day", "clicked"), on="impression_id"
    )
    categories = sorted(set(honest["category"].drop_nulls().to_list()))

    def split(frame):
        weeks = frame.filter(pl.col("day") < train_days).sort("impression_id")
        holdout = weeks.sample(fraction=0.2, seed=seed)
        train = weeks.join(holdout.select("impression_id"), on="impression_id", how="anti")
        return train, holdout

    # Served: the later days with the features a server computes at
    # request time, the point-in-time ones, whatever the model was trained on.
    served = honest.filter(pl.col("day") >= train_days)
    results = {}
    for name, frame in (("leaky", leaky), ("leakless", honest)):
        train, holdout = split(frame)
        offline, online = score(train, holdout, served, categories, seed)
        results[name] = {"offline_auc": round(offline, 3), "served_auc": round(online, 3)}
    return {
        "impressions": impressions,
        "seed": seed,
        "rows": summary.rows_written,
        "train_days": train_days,
        "click_rate": round(float(honest["clicked"].mean()), 4),
        **results,
    }


def table(results: dict) -> str:
    lines = [
        f"{results['impressions']:,} impressions (seed {results['seed']}), "
        f"{results['rows']:,} rows, {results['click_rate']:.1%} clicked; "
        f"trained on days 1-{results['train_days']}",
        f"{'training set':<14}{'offline AUC':>14}{'served AUC':>14}",
        f"{'':<14}{'(holdout)':>14}{'(later days)':>14}",
    ]
    for name in ("leaky", "leakless"):
        r = results[name]
        lines.append(f"{name:<14}{r['offline_auc']:>14.3f}{r['served_auc']:>14.3f}")
    return "\n".join(lines)


def draw(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["leaky", "leakless"]
    offline = [results[n]["offline_auc"] for n in names]
    served = [results[n]["served_auc"] for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    xs = range(len(names))
    width = 0.36
    bars = [
        ax.bar([x - width / 2 for x in xs], offline, width, label="offline (random holdout)", color="#9aa9c4"),
        ax.bar([x + width / 2 for x in xs], served, width, label="served (later days)", color="#2f5d9e"),
    ]
    for group in bars:
        for bar in group:
            ax.annotate(f"{bar.get_height():.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
    low = min(offline + served)
    ax.set_ylim(max(0.5, low - 0.08), 1.0)
    ax.set_xticks(list(xs), ["leaky training set\n(the usual way)", "leakless training set"])
    ax.set_ylabel("AUC")
    ax.set_title(f"Same model, same labels: {results['impressions']:,} impressions")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, help="folder for the data (default: a temporary one)")
    parser.add_argument("--png", type=Path, help="draw the AUCs into this PNG")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.impressions, args.seed, args.work or Path(tmp))
    print(table(results))
    if args.png:
        draw(results, args.png)
        print(f"drawn: {args.png}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
