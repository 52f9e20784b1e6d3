"""The Rust extension behind ``leakless`` (use the package's functions)."""

from typing import Any, Callable, Dict, Optional

__version__: str

class LeaklessError(Exception):
    """An error of leakless: the command line's message, causes and hint."""

    path: Optional[str]

class SpecError(LeaklessError):
    """The spec is not valid."""

    path: Optional[str]
    errors: list[Dict[str, Any]]

class InputError(LeaklessError):
    """An input cannot be read as the spec declares it."""

    path: Optional[str]
    line: Optional[int]
    row: Optional[int]
    column: Optional[str]
    value: Optional[str]
    reason: Optional[str]

class QualityError(LeaklessError):
    """A data-quality gate failed; nothing was published."""

class OutputError(LeaklessError):
    """The output may not be written."""

    path: Optional[str]

class LockedError(OutputError):
    """Another run is writing the output."""

class DatasetStream:
    """A dataset's rows as an Arrow C stream, read once."""

    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...

def build(
    spec: Any,
    out: str,
    *,
    watermark: Optional[str] = None,
    overwrite: bool = False,
    sources: Optional[Dict[str, str]] = None,
    partitions: Optional[int] = None,
    incremental: bool = False,
    format: Optional[str] = None,
    bad_rows: str = "fail",
    max_bad_rows: Optional[float] = None,
    publish_on_failed_checks: bool = False,
    wait: bool = False,
    ignore: Optional[list[str]] = None,
    watermark_margin: Optional[str] = None,
    scheduler: Optional[str] = None,
    progress: Optional[Callable[[str, int], None]] = None,
) -> str: ...
def check(
    spec: Any, *, sources: Optional[Dict[str, str]] = None, ignore: Optional[list[str]] = None
) -> str: ...
def explain(spec: Any) -> str: ...
def generate(
    out: str,
    *,
    impressions: int,
    listings: Optional[int] = None,
    users: Optional[int] = None,
    days: int = 30,
    start: str = "2026-10-01",
    seed: int = 42,
    format: str = "csv",
) -> str: ...
def open_dataset(out: str) -> DatasetStream: ...
def cli(args: list[str]) -> int: ...
