"""The data of the second rich spec (bench/rich2.toml): a search and ads
marketplace over 30 days (a benchmark input, not part of leakless).

usage: gen_rich2.py OUT_DIR --requests N [--seed S] [--format parquet|csv]

Writes five tables into OUT_DIR:

- `requests.parquet`: request_id (random unique 63-bit), user ("u" and 8
  digits; 0.5 % null), item_id (random int64), query_id (random int64; 2 %
  null), request_ts. The spine.
- `views/part-0000{0..3}.parquet`: user (1 % null), item_id, dwell (seconds,
  a multiple of 1/4; 4 % null), view_ts. About 2.5 views per request: most
  follow a request of the same user and item (0 s, exactly 5 min, exactly
  65 min or an exponential delay after it), the rest are browsing.
- `purchases/part-0000{0,1}.parquet`: user (0.5 % null), item_id, amount (a
  multiple of 1/4, 1 % refunds below zero, 2 % null), quantity (2 % null),
  purchase_ts. About 0.15 per request, mostly after a view.
- `item_prices.parquet`: item_id, price (2 % null), valid_from: 1 + Poisson(3)
  versions per item, at whole minutes.
- `user_segments.parquet`: user, segment (2 % null), tier (3 % null),
  valid_from: 1 + Poisson(2) versions per user, at whole seconds.

Users, items and queries are drawn from Zipf-Mandelbrot laws (weight
`1 / (rank + q)`, ranks mapped to random ids), so that a few keys are hot:
at 10 M requests the hottest item has about 30,000 views and the hottest
user about 20,000 requests. Every table's rows are shuffled (ids do not rise
with time); times are whole seconds for most rows (ties), and 3 % of the
requests are "echoes" placed exactly on a window bound of an earlier event
(t = e + delay + w for the spec's windows, t = e - offset and t = e - offset - w
for its labels, t = valid_from + delay for its dimensions). Every float is a
multiple of 1/4 well under 2^40 in magnitude, so any summation order gives
the exact sum. No two dimension rows share (key, valid_from).

`_generator.json` holds the watermark (the end of the period) and the row
counts. Memory stays within a few GB at 10 M requests.
"""
import argparse
import json
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

S = 1_000_000
MIN = 60 * S
H = 3600 * S
DAY = 24 * H
START = int(datetime(2026, 10, 1, tzinfo=timezone.utc).timestamp()) * S
DAYS = 30
END = START + DAYS * DAY
TS = pa.timestamp("us", "UTC")
SEGMENTS = np.array(["new", "casual", "regular", "power", "dormant"], dtype=object)
# The spec's delays, windows and label bounds (bench/rich2.toml), for the echoes.
PURCHASE_DELAY = 2 * MIN
PRICE_DELAY = 5 * MIN
SEGMENT_DELAY = H
WINDOWS = [H, 6 * H, DAY, 7 * DAY, 30 * DAY]


def zipf_sampler(rng, n_keys, q):
    """Draws ranks 0..n_keys-1 with weight 1 / (rank + q) by inverse CDF."""
    cdf = np.cumsum(1.0 / (np.arange(n_keys) + q))
    cdf /= cdf[-1]
    return lambda n: np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), n_keys - 1)


def unique_ids(rng, n, high):
    """n distinct random int64 in [1, high), in random order."""
    ids = np.unique(rng.integers(1, high, int(n * 1.01) + 16))
    while len(ids) < n:
        ids = np.unique(np.concatenate([ids, rng.integers(1, high, n)]))
    return rng.permutation(ids)[:n]


def nulls(rng, n, share):
    return rng.random(n) < share


def quarters(rng, lo, hi, n):
    """Multiples of 1/4 in [lo, hi)."""
    return rng.integers(int(lo * 4), int(hi * 4), n) / 4.0


def times(rng, n, lo=START, hi=END, whole_minute_share=0.0, fraction_share=0.0):
    """Uniform times in [lo, hi): whole seconds, some whole minutes, some with a
    microsecond fraction."""
    t = lo + rng.integers(0, (hi - lo) // S, n) * S
    m = nulls(rng, n, whole_minute_share)
    t[m] -= (t[m] - lo) % MIN
    f = nulls(rng, n, fraction_share)
    t[f] += rng.integers(0, S, int(f.sum()))
    return t


def delays(rng, n, mean_s, exact):
    """Whole-second exponential delays, with a share of rows at exact values:
    `exact` is a list of (value_us, share)."""
    d = np.rint(rng.exponential(mean_s, n)).astype(np.int64) * S
    u = rng.random(n)
    acc = 0.0
    for value, share in exact:
        d[(u >= acc) & (u < acc + share)] = value
        acc += share
    return d


def strings(names, idx, null):
    """An Arrow string array names[idx], null where `null`."""
    return pa.array(names, pa.string()).take(pa.array(idx, pa.int64(), mask=null))


def table(columns):
    return pa.table({k: (v if isinstance(v, pa.Array) else pa.array(v[0], v[1], mask=v[2] if len(v) > 2 else None))
                     for k, v in columns.items()})


def write(tbl, out, name, fmt, parts=1):
    """One file, or `parts` files in a folder (input order: file order, then rows)."""
    ext = "parquet" if fmt == "parquet" else "csv"
    if parts == 1:
        paths = [os.path.join(out, f"{name}.{ext}")]
    else:
        os.makedirs(os.path.join(out, name), exist_ok=True)
        paths = [os.path.join(out, name, f"part-{i:05d}.{ext}") for i in range(parts)]
    bounds = np.linspace(0, tbl.num_rows, len(paths) + 1).astype(int)
    for path, lo, hi in zip(paths, bounds[:-1], bounds[1:]):
        piece = tbl.slice(lo, hi - lo)
        if fmt == "parquet":
            pq.write_table(piece, path, row_group_size=1 << 20, compression="zstd")
        else:
            pacsv.write_csv(piece, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    args = ap.parse_args()
    n = args.requests
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)

    n_users, n_items, n_queries = max(200, n // 20), max(100, n // 50), max(100, n // 10)
    user_names = np.array([f"u{i:08d}" for i in rng.choice(10**8, n_users, replace=False)], dtype=object)
    item_ids = unique_ids(rng, n_items, 1 << 62)
    query_ids = unique_ids(rng, n_queries, 1 << 40)
    draw_user = zipf_sampler(rng, n_users, 50)
    draw_item = zipf_sampler(rng, n_items, 100)
    draw_query = zipf_sampler(rng, n_queries, 20)

    # Requests (before the echoes): user and item ranks, times.
    n_echo = n * 3 // 100
    n_base = n - n_echo
    r_user = draw_user(n_base)
    r_item = draw_item(n_base)
    r_ts = times(rng, n_base, whole_minute_share=0.05, fraction_share=0.3)

    # Views: after requests of the same user and item, and browsing.
    per = rng.poisson(1.3, n_base)
    src = np.repeat(np.arange(n_base), per)
    v_user = np.concatenate([r_user[src], draw_user(int(n * 1.2))])
    v_item = np.concatenate([r_item[src], draw_item(int(n * 1.2))])
    v_ts = np.concatenate([
        r_ts[src] + delays(rng, len(src), 1200, [(0, 0.08), (5 * MIN, 0.03), (65 * MIN, 0.02)]),
        times(rng, int(n * 1.2), whole_minute_share=0.1),
    ])
    del per, src
    keep = v_ts < END
    v_user, v_item, v_ts = v_user[keep], v_item[keep], v_ts[keep]
    nv = len(v_ts)

    # Purchases: after 5 % of the views, and some at random.
    conv = np.flatnonzero(rng.random(nv) < 0.05)
    n_rand = n // 50
    p_user = np.concatenate([v_user[conv], draw_user(n_rand)])
    p_item = np.concatenate([v_item[conv], draw_item(n_rand)])
    p_ts = np.concatenate([v_ts[conv] + delays(rng, len(conv), 3600, [(0, 0.05), (PURCHASE_DELAY, 0.05)]),
                           times(rng, n_rand)])
    del conv
    keep = p_ts < END
    p_user, p_item, p_ts = p_user[keep], p_item[keep], p_ts[keep]
    np_ = len(p_ts)

    # Versioned dimensions: first version mostly before the period.
    def versions(n_keys, mean_extra, unit, early_share):
        k = np.repeat(np.arange(n_keys), 1 + rng.poisson(mean_extra, n_keys))
        first = np.r_[True, k[1:] != k[:-1]]
        vf = times(rng, len(k), lo=START - 10 * DAY, hi=END)
        early = first & (rng.random(len(k)) < early_share)
        vf[early] = START - rng.integers(1, 60 * DAY // S, int(early.sum())) * S
        vf -= (vf - (START - 60 * DAY)) % unit
        order = np.lexsort((vf, k))
        k, vf = k[order], vf[order]
        dup = np.r_[False, (k[1:] == k[:-1]) & (vf[1:] == vf[:-1])]
        return k[~dup], vf[~dup]

    ip_item, ip_vf = versions(n_items, 3, MIN, 0.9)
    us_user, us_vf = versions(n_users, 2, S, 0.85)

    # Echoes: requests exactly on a bound of an earlier event or version.
    cands = []  # (user rank, item rank, t)

    def echo(users, items, t):
        cands.append((users, items, t))

    k = max(1, n_echo // 12)
    for w in [0] + WINDOWS:
        i = rng.integers(0, nv, k // 2)
        echo(v_user[i], v_item[i], v_ts[i] + w)           # view at t - w: in (w > 0); at t: out
        i = rng.integers(0, np_, k // 4)
        echo(p_user[i], p_item[i], p_ts[i] + PURCHASE_DELAY + w)
    for shift in [-5 * MIN, -65 * MIN]:                    # a view at t + 5 min (in), t + 65 min (out)
        i = rng.integers(0, nv, k)
        echo(v_user[i], v_item[i], v_ts[i] + shift)
    for shift in [0, -DAY]:                                # a purchase at t (in), at t + 24 h (out)
        i = rng.integers(0, np_, k)
        echo(p_user[i], p_item[i], p_ts[i] + shift)
    for w in [6 * H, DAY]:                                 # another request at t - w
        i = rng.integers(0, n_base, k // 2)
        echo(r_user[i], r_item[i], r_ts[i] + w)
    i = rng.integers(0, len(ip_item), k)                   # a price version at exactly t - 5 min
    echo(draw_user(k), ip_item[i], ip_vf[i] + PRICE_DELAY)
    i = rng.integers(0, len(us_user), k)                   # a segment version at exactly t - 1 h
    echo(us_user[i], draw_item(k), us_vf[i] + SEGMENT_DELAY)
    e_user = np.concatenate([c[0] for c in cands])
    e_item = np.concatenate([c[1] for c in cands])
    e_ts = np.concatenate([c[2] for c in cands])
    ok = np.flatnonzero((e_ts >= START) & (e_ts < END))
    ok = rng.permutation(ok)[:n_echo]
    fill = n_echo - len(ok)
    r_user = np.concatenate([r_user, e_user[ok], draw_user(fill)])
    r_item = np.concatenate([r_item, e_item[ok], draw_item(fill)])
    r_ts = np.concatenate([r_ts, e_ts[ok], times(rng, fill)])
    del cands, e_user, e_item, e_ts, ok

    # Requests, shuffled.
    order = rng.permutation(n)
    requests = table({
        "request_id": (unique_ids(rng, n, (1 << 63) - 1), pa.int64()),
        "user": strings(user_names, r_user[order], nulls(rng, n, 0.005)),
        "item_id": (item_ids[r_item[order]], pa.int64()),
        "query_id": (query_ids[draw_query(n)], pa.int64(), nulls(rng, n, 0.02)),
        "request_ts": (r_ts[order], TS),
    })
    write(requests, args.out, "requests", args.format)
    del requests, r_user, r_item, r_ts, order

    order = rng.permutation(nv)
    views = table({
        "user": strings(user_names, v_user[order], nulls(rng, nv, 0.01)),
        "item_id": (item_ids[v_item[order]], pa.int64()),
        "dwell": (quarters(rng, 0, 600, nv), pa.float64(), nulls(rng, nv, 0.04)),
        "view_ts": (v_ts[order], TS),
    })
    write(views, args.out, "views", args.format, parts=4)
    del views, v_user, v_item, v_ts, order

    order = rng.permutation(np_)
    scale = rng.choice([20, 100, 1000], np_, p=[0.5, 0.4, 0.1])
    amount = rng.integers(1, scale * 4 + 1) / 4.0
    refund = nulls(rng, np_, 0.01)
    amount[refund] = -amount[refund]
    purchases = table({
        "user": strings(user_names, p_user[order], nulls(rng, np_, 0.005)),
        "item_id": (item_ids[p_item[order]], pa.int64()),
        "amount": (amount, pa.float64(), nulls(rng, np_, 0.02)),
        "quantity": (1 + rng.poisson(0.5, np_), pa.int64(), nulls(rng, np_, 0.02)),
        "purchase_ts": (p_ts[order], TS),
    })
    write(purchases, args.out, "purchases", args.format, parts=2)
    del purchases, p_user, p_item, p_ts, order

    ni = len(ip_item)
    order = rng.permutation(ni)
    prices = table({
        "item_id": (item_ids[ip_item[order]], pa.int64()),
        "price": (quarters(rng, 0.25, 2000, ni), pa.float64(), nulls(rng, ni, 0.02)),
        "valid_from": (ip_vf[order], TS),
    })
    write(prices, args.out, "item_prices", args.format)

    nu = len(us_user)
    order = rng.permutation(nu)
    segments = table({
        "user": strings(user_names, us_user[order], np.zeros(nu, bool)),
        "segment": strings(SEGMENTS, rng.integers(0, len(SEGMENTS), nu), nulls(rng, nu, 0.02)),
        "tier": (rng.integers(1, 5, nu), pa.int64(), nulls(rng, nu, 0.03)),
        "valid_from": (us_vf[order], TS),
    })
    write(segments, args.out, "user_segments", args.format)

    watermark = datetime.fromtimestamp(END // S, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = {"watermark": watermark, "format": args.format, "seed": args.seed,
            "params": {"requests": n, "users": n_users, "items": n_items, "queries": n_queries, "days": DAYS},
            "rows": {"requests": n, "views": nv, "purchases": np_, "item_prices": ni, "user_segments": nu}}
    with open(os.path.join(args.out, "_generator.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
