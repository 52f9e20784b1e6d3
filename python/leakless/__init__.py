"""leakless: point-in-time correct training datasets from event logs.

A spec (a TOML file, or a dict in the TOML's shape) declares sources,
features over exact windows, as-of lookups and labels; :func:`build`
writes one row per mature spine row, features from the past and labels
from the future, as Parquet partitioned by day (or a Delta Lake table);
:func:`read` hands the rows back as a ``pyarrow.Table``::

    import leakless
    summary = leakless.build("examples/marketplace/leakless.toml", "dataset")
    table = leakless.read("dataset")

The definitions are in ``docs/semantics.md`` of the repository. Errors are
:class:`LeaklessError` subclasses carrying the command line's message.
"""

from __future__ import annotations

import datetime as _dt
import json as _json
import os as _os
import sys as _sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _leakless
from ._leakless import (
    InputError,
    LeaklessError,
    LockedError,
    OutputError,
    QualityError,
    SpecError,
)

__version__ = _leakless.__version__

__all__ = [
    "BuildSummary",
    "InputError",
    "LeaklessError",
    "LockedError",
    "OutputError",
    "QualityError",
    "SpecError",
    "build",
    "check",
    "explain",
    "generate",
    "read",
    "to_polars",
]

PathLike = Union[str, "_os.PathLike[str]"]
Spec = Union[PathLike, Mapping[str, Any]]


class BuildSummary:
    """What a build did: the numbers of ``leakless build --json``.

    Every key of that JSON is an attribute (``rows_written``,
    ``immature_held_back``, ``rows_read``, ``positive_labels``,
    ``watermarks``, ``partitions``, ``files``, ``feature_set_hash``,
    ``reconciliation``, ``quarantined``, ``checks``, ``increment``,
    ``delta_version``, ``timings``, ``seconds``, ...); :meth:`to_dict`
    gives them all.
    """

    out: str
    feature_set_hash: str
    rows_read: Dict[str, int]
    reconciliation: Dict[str, Dict[str, Any]]
    quarantined: Dict[str, Dict[str, Any]]
    checks: List[Dict[str, Any]]
    rows_written: int
    spine_filtered_out: int
    positive_labels: Dict[str, int]
    immature_held_back: int
    watermarks: Dict[str, str]
    hot_keys: int
    key_groups: List[Dict[str, Any]]
    partitions: int
    files: int
    stale_removed: int
    target_partitions: int
    increment: Optional[Dict[str, Any]]
    delta_version: Optional[int]
    timings: Dict[str, float]
    seconds: float

    def __init__(self, data: Dict[str, Any]):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._data))

    def to_dict(self) -> Dict[str, Any]:
        """Every number, as the JSON of ``leakless build --json`` has it."""
        return _json.loads(_json.dumps(self._data))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuildSummary) and other._data == self._data

    def __repr__(self) -> str:
        d = self._data
        return (
            f"BuildSummary(out={d.get('out')!r}, rows_written={d.get('rows_written')}, "
            f"immature_held_back={d.get('immature_held_back')}, "
            f"positive_labels={d.get('positive_labels')}, seconds={d.get('seconds')})"
        )


def _timestamp(value: Union[str, _dt.datetime, None]) -> Optional[str]:
    """A watermark as RFC 3339 (a naive datetime is UTC)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat() + "Z"
    raise TypeError(f"watermark must be a str or a datetime, not {type(value).__name__}")


def _spec(spec: Spec) -> Any:
    if isinstance(spec, Mapping):
        return dict(spec)
    return _os.fspath(spec)


def _sources(sources: Optional[Mapping[str, PathLike]]) -> Optional[Dict[str, str]]:
    if sources is None:
        return None
    return {str(name): _os.fspath(path) for name, path in sources.items()}


def _globs(ignore: Union[str, Sequence[str], None]) -> Optional[List[str]]:
    """Globs as a list (one glob may come alone)."""
    if ignore is None:
        return None
    if isinstance(ignore, (str, _os.PathLike)):
        return [_os.fspath(ignore)]
    return [_os.fspath(g) for g in ignore]


def _progress_bar(progress: Union[bool, Callable[[str, int], None], None]):
    """A callback and a closer: a user's callable; else tqdm's bar when
    tqdm is installed and a person watches (a notebook, or stderr a
    terminal; ``progress=True`` forces it), made at the first report; else
    nothing."""
    if callable(progress):
        return progress, lambda: None
    watched = "ipykernel" in _sys.modules or _sys.stderr.isatty()
    if progress is False or (progress is None and not watched):
        return None, lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, lambda: None
    bars = []

    def update(stage: str, rows: int) -> None:
        if not bars:
            bars.append(tqdm(total=None, unit=" rows", desc="leakless", leave=False))
        bars[0].set_description(f"leakless: {stage}")
        bars[0].n = rows
        bars[0].refresh()

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def build(
    spec: Spec,
    out: PathLike,
    *,
    watermark: Union[str, _dt.datetime, None] = None,
    overwrite: bool = False,
    sources: Optional[Mapping[str, PathLike]] = None,
    partitions: Optional[int] = None,
    shards: Optional[int] = None,
    incremental: bool = False,
    format: Optional[str] = None,
    bad_rows: str = "fail",
    max_bad_rows: Optional[float] = None,
    publish_on_failed_checks: bool = False,
    wait: bool = False,
    ignore: Union[str, Sequence[str], None] = None,
    watermark_margin: Optional[str] = None,
    scheduler: Optional[str] = None,
    progress: Union[bool, Callable[[str, int], None], None] = None,
) -> BuildSummary:
    """Builds the training dataset of ``spec`` at ``out``, as ``leakless build``.

    ``spec``: a TOML file's path, or a dict in the TOML's shape (relative
    paths in a dict are relative to the current folder). ``watermark``: the
    time up to which label sources are complete (RFC 3339 or a datetime;
    naive is UTC). ``sources``: replace sources' paths by name.
    ``partitions``: DataFusion partitions (default: the cores).
    ``shards``: bound memory by cutting the keys into this many shards,
    only ``partitions`` of them indexed at once, rows passing between key
    groups through files (the same bytes; see ``leakless build --shards``).
    ``incremental``: add to the dataset at ``out`` computing only what
    changed. ``format``: ``"parquet"`` or ``"delta"`` (default: the spec's).
    ``bad_rows``: ``"fail"`` or ``"quarantine"``; ``max_bad_rows``: the
    fraction of a source's rows that may be bad under quarantine.
    ``publish_on_failed_checks``: publish despite a failed ``[checks]``
    bound. ``wait``: wait for another run writing ``out``. ``ignore``: globs
    of input files to leave out of folder inputs. ``watermark_margin``:
    without a watermark, how far after the spine's last time a label
    source's latest event may be (default ``"7d"``). ``scheduler``: run on the
    Ballista cluster at ``host:port``. ``progress``: a tqdm bar when tqdm is
    installed and a person watches (``True``: always, ``False``: never), or
    a callable ``(stage, rows)`` called from this thread.

    The GIL is released while the build runs. Ctrl-C stops it: nothing is
    published and its staging is removed (a Ctrl-C during the final commit
    lets the commit complete, then raises). Raises :class:`SpecError`,
    :class:`InputError`, :class:`QualityError`, :class:`OutputError` or
    :class:`LeaklessError`.
    """
    callback, close = _progress_bar(progress)
    try:
        summary = _leakless.build(
            _spec(spec),
            _os.fspath(out),
            watermark=_timestamp(watermark),
            overwrite=overwrite,
            sources=_sources(sources),
            partitions=partitions,
            shards=shards,
            incremental=incremental,
            format=format,
            bad_rows=bad_rows,
            max_bad_rows=max_bad_rows,
            publish_on_failed_checks=publish_on_failed_checks,
            wait=wait,
            ignore=_globs(ignore),
            watermark_margin=watermark_margin,
            scheduler=scheduler,
            progress=callback,
        )
    finally:
        close()
    return BuildSummary(_json.loads(summary))


def check(
    spec: Spec,
    *,
    sources: Optional[Mapping[str, PathLike]] = None,
    ignore: Union[str, Sequence[str], None] = None,
) -> Dict[str, Any]:
    """Validates ``spec`` against its inputs' headers and schemas, computing
    nothing: the report of ``leakless check --json`` (sources, indexes,
    warnings, feature-set hash)."""
    return _json.loads(
        _leakless.check(_spec(spec), sources=_sources(sources), ignore=_globs(ignore))
    )


def explain(spec: Spec) -> Dict[str, Any]:
    """Every output column's exact definition and the feature-set hash, as
    ``leakless explain --json``."""
    return _json.loads(_leakless.explain(_spec(spec)))


def generate(
    out: PathLike,
    *,
    impressions: int = 1_000_000,
    listings: Optional[int] = None,
    users: Optional[int] = None,
    days: int = 30,
    start: str = "2026-10-01",
    seed: int = 42,
    format: str = "csv",
) -> Dict[str, Any]:
    """Generates a seeded marketplace (impressions, clicks, listings) into
    ``out``, as ``leakless generate``; its realised totals. The same seed
    and sizes give the same bytes."""
    return _json.loads(
        _leakless.generate(
            _os.fspath(out),
            impressions=impressions,
            listings=listings,
            users=users,
            days=days,
            start=start,
            seed=seed,
            format=format,
        )
    )


def read(out: PathLike):
    """The rows of the dataset at ``out`` (a Parquet dataset, or a Delta
    table's latest version) as a ``pyarrow.Table``: partitions in time
    order, the spec's output columns."""
    import pyarrow as pa

    stream = _leakless.open_dataset(_os.fspath(out))
    return pa.RecordBatchReader.from_stream(stream).read_all()


def to_polars(out: PathLike):
    """The rows of the dataset at ``out`` as a ``polars.DataFrame`` (see
    :func:`read`)."""
    import polars as pl

    return pl.from_arrow(read(out))
