//! `leakless._leakless`: the library's jobs for Python (the package
//! `leakless` in `python/leakless/` is the API; this module is its engine).
//!
//! Invariants:
//! - every job runs with the GIL released; a build runs on its own tokio
//!   runtime while the calling thread waits in slices of 100 ms, checking
//!   Python's signals (Ctrl-C) and passing progress to a callback;
//! - a build stopped by a signal publishes nothing and leaves nothing
//!   behind: its task is aborted, its runtime shut down (every task ended),
//!   then [`leakless::write::clean_up`] removes what it staged;
//! - an error of the library is a Python exception of the matching class
//!   with the message the command line prints (causes and hint included)
//!   and its place as attributes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use datafusion::arrow::ffi_stream::FFI_ArrowArrayStream;
use leakless::spec::{OutputFormat, Spec};
use leakless::{Build, Error, Reporter, Stage};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyCapsule, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

pyo3::create_exception!(
    leakless,
    LeaklessError,
    PyException,
    "An error of leakless: the message the command line prints, its causes and a hint."
);
pyo3::create_exception!(
    leakless,
    SpecError,
    LeaklessError,
    "The spec is not valid; `errors` lists every mistake with its place."
);
pyo3::create_exception!(
    leakless,
    InputError,
    LeaklessError,
    "An input cannot be read as the spec declares it (`path`, `line`, `column`, `value`)."
);
pyo3::create_exception!(
    leakless,
    QualityError,
    LeaklessError,
    "A data-quality gate failed (bad rows above the bound, a [checks] bound); nothing was published."
);
pyo3::create_exception!(
    leakless,
    OutputError,
    LeaklessError,
    "The output may not be written: it exists, is of the other format, or was published meanwhile."
);
pyo3::create_exception!(
    leakless,
    LockedError,
    OutputError,
    "Another run is writing the output."
);

/// How often a waiting call looks at Python's signals and the progress.
const SLICE: Duration = Duration::from_millis(100);

/// The Python exception for `err`, with the message the command line
/// prints after `error:` (its causes, then its hint) and attributes
/// naming its place.
fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    let mut message = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        message.push_str(&format!("\ncaused by: {c}"));
        cause = c.source();
    }
    if let Some(hint) = leakless_cli::hint_for(err) {
        message.push_str(&format!("\nhint: {}", python_hint(&hint)));
    }
    let py_err = match err {
        Error::Spec(_) => SpecError::new_err(message),
        Error::BadRow(_)
        | Error::MissingColumn { .. }
        | Error::AmbiguousColumn { .. }
        | Error::ColumnType { .. }
        | Error::NoInputFiles { .. }
        | Error::UnreadableFile { .. }
        | Error::UnknownFormat { .. }
        | Error::InputTwice { .. }
        | Error::DuplicateKey { .. }
        | Error::EventAfterSpine(_)
        | Error::NoWatermark { .. } => InputError::new_err(message),
        Error::Quality(_) => QualityError::new_err(message),
        Error::Locked { .. } => LockedError::new_err(message),
        Error::OutputExists { .. }
        | Error::OtherFormat { .. }
        | Error::PublishedMeanwhile { .. } => OutputError::new_err(message),
        _ => LeaklessError::new_err(message),
    };
    if let Err(e) = set_place(py, &py_err, err) {
        return e;
    }
    py_err
}

/// The command line's hint in the words of the Python API: its flags as
/// `build`'s arguments.
fn python_hint(hint: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("--bad-rows quarantine", "bad_rows=\"quarantine\""),
        ("--max-bad-rows", "the max_bad_rows= argument"),
        (
            "--publish-on-failed-checks",
            "publish_on_failed_checks=True",
        ),
        ("--overwrite", "overwrite=True"),
        ("--format delta", "format=\"delta\""),
        ("--format parquet", "format=\"parquet\""),
        ("another --out", "another out"),
        ("--wait", "wait=True"),
        ("--watermark-margin", "watermark_margin="),
        ("--watermark", "watermark="),
        (
            "--ignore GLOB (e.g. --ignore '*.json')",
            "ignore=[GLOB] (e.g. ignore=[\"*.json\"])",
        ),
        ("`leakless check --spec S`", "`leakless.check(spec)`"),
    ];
    let mut hint = hint.to_owned();
    for (cli, python) in WORDS {
        hint = hint.replace(cli, python);
    }
    hint
}

/// Sets the attributes that say where `err` is on the exception (each
/// one its class declares; `None` where `err` has no such place).
fn set_place(py: Python<'_>, py_err: &PyErr, err: &Error) -> PyResult<()> {
    let value = py_err.value(py);
    let path = |p: &Path| p.display().to_string();
    value.setattr("path", py.None())?;
    if py_err.is_instance_of::<InputError>(py) {
        for name in ["line", "row", "column", "value", "reason"] {
            value.setattr(name, py.None())?;
        }
    }
    match err {
        Error::Spec(errors) => {
            let list = PyList::empty(py);
            for e in &errors.errors {
                let d = PyDict::new(py);
                d.set_item("path", path(&errors.path))?;
                d.set_item("line", e.line.map(|l| l.0))?;
                d.set_item("column", e.line.map(|l| l.1))?;
                d.set_item("context", &e.context)?;
                d.set_item("message", &e.message)?;
                list.append(d)?;
            }
            value.setattr("path", path(&errors.path))?;
            value.setattr("errors", list)?;
        }
        Error::BadRow(row) => {
            value.setattr("path", path(&row.path))?;
            let (line, number) = match row.location {
                leakless::error::Location::Line(n) => (Some(n), None),
                leakless::error::Location::Row(n) => (None, Some(n)),
            };
            value.setattr("line", line)?;
            value.setattr("row", number)?;
            value.setattr("column", row.column.clone())?;
            value.setattr("value", row.value.clone())?;
            value.setattr("reason", &row.reason)?;
        }
        Error::EventAfterSpine(e) => {
            value.setattr("path", path(&e.path))?;
            match e.location {
                leakless::error::Location::Line(n) => value.setattr("line", n)?,
                leakless::error::Location::Row(n) => value.setattr("row", n)?,
            }
            value.setattr("value", &e.time)?;
        }
        Error::MissingColumn {
            path: p, column, ..
        }
        | Error::AmbiguousColumn {
            path: p, column, ..
        }
        | Error::ColumnType {
            path: p, column, ..
        } => {
            value.setattr("path", path(p))?;
            value.setattr("column", column)?;
        }
        Error::NoInputFiles { path: p, .. }
        | Error::UnreadableFile { path: p, .. }
        | Error::UnknownFormat { path: p }
        | Error::InputTwice { path: p, .. }
        | Error::OutputExists { path: p, .. }
        | Error::OtherFormat { path: p, .. }
        | Error::PublishedMeanwhile { path: p }
        | Error::Locked { path: p, .. }
        | Error::Io { path: p, .. }
        | Error::Parquet { path: p, .. } => value.setattr("path", path(p))?,
        _ => {}
    }
    Ok(())
}

/// A spec given as a path or as a dict in the TOML's shape.
fn load_spec(
    py: Python<'_>,
    spec: &Bound<'_, PyAny>,
    overrides: &[(String, PathBuf)],
    ignore: &[String],
) -> PyResult<Spec> {
    if let Ok(dict) = spec.cast::<PyDict>() {
        let table = match to_toml(dict.as_any(), "")? {
            toml::Value::Table(table) => table,
            _ => unreachable!("a dict is a table"),
        };
        let text =
            toml::to_string(&table).map_err(|e| dict_error(py, "", format!("not a spec: {e}")))?;
        // The text is ours, not the user's: its lines mean nothing to them;
        // the context (`features.x`) says where a mistake is.
        let loaded =
            py.detach(|| leakless::spec::load_text(&text, Path::new(DICT), overrides, ignore));
        return match loaded {
            Ok(spec) => Ok(spec),
            Err(Error::Spec(mut errors)) => {
                for e in &mut errors.errors {
                    e.line = None;
                }
                Err(spec_error(py, errors))
            }
            Err(e) => Err(to_py(py, &e)),
        };
    }
    let path = spec_path(spec)?;
    let loaded = py.detach(|| leakless::spec::load_ignoring(&path, overrides, ignore));
    loaded.map_err(|e| match e {
        Error::Spec(errors) => spec_error(py, errors),
        e => to_py(py, &e),
    })
}

/// A spec's mistakes, a mistake in `sources=` named by the argument (the
/// library names the command line's `--source`).
fn spec_error(py: Python<'_>, mut errors: Box<leakless::spec::SpecErrors>) -> PyErr {
    for e in &mut errors.errors {
        if e.context == "--source" {
            e.context = "sources".into();
        }
    }
    to_py(py, &Error::Spec(errors))
}

/// A spec's path (str or os.PathLike).
fn spec_path(spec: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    spec.extract().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "spec must be a path (str or os.PathLike) or a dict, not {}",
            type_name(spec)
        ))
    })
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "an object".into(), |n| n.to_string())
}

/// A mistake in a spec dict at key path `at`, as a spec's errors are.
fn dict_error(py: Python<'_>, at: &str, message: String) -> PyErr {
    let errors = leakless::spec::SpecErrors {
        path: PathBuf::from(DICT),
        errors: vec![leakless::spec::SpecError {
            line: None,
            context: at.to_owned(),
            message,
        }],
    };
    to_py(py, &Error::Spec(Box::new(errors)))
}

/// The name a dict spec goes by in messages.
const DICT: &str = "<dict>";

/// A Python value of a spec dict as TOML; `at` is its key path.
fn to_toml(value: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    let here = |key: &str| match at {
        "" => key.to_owned(),
        _ => format!("{at}.{key}"),
    };
    let fail = |what: String| dict_error(value.py(), at, what);
    if value.is_none() {
        return Err(fail("is None; leave the key out to use its default".into()));
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(value.extract()?));
    }
    if value.is_instance_of::<PyInt>() {
        let n: i64 = value
            .extract()
            .map_err(|_| fail(format!("{value} is not a 64-bit integer")))?;
        return Ok(toml::Value::Integer(n));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(value.extract()?));
    }
    if value.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(value.extract()?));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (k, v) in dict.iter() {
            let key: String = k
                .extract()
                .map_err(|_| fail(format!("key {k} is not a string")))?;
            let item = to_toml(&v, &here(&key))?;
            table.insert(key, item);
        }
        return Ok(toml::Value::Table(table));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, v) in value.try_iter()?.enumerate() {
            items.push(to_toml(&v?, &format!("{at}[{i}]"))?);
        }
        return Ok(toml::Value::Array(items));
    }
    if value.hasattr("__fspath__")? {
        let path: PathBuf = value.extract()?;
        return Ok(toml::Value::String(path.display().to_string()));
    }
    Err(fail(format!(
        "a {} is not a spec value (str, int, float, bool, list, dict or a path)",
        type_name(value)
    )))
}

/// Progress of a build, read by the waiting thread.
#[derive(Default)]
struct Progress {
    stage: AtomicU8,
    rows: AtomicU64,
}

impl Reporter for Progress {
    fn stage(&self, stage: Stage) {
        let n = match stage {
            Stage::Reading => 1,
            Stage::Writing => 2,
            Stage::Done => 3,
        };
        self.stage.store(n, Ordering::Relaxed);
    }

    fn rows(&self, rows: u64) {
        self.rows.store(rows, Ordering::Relaxed);
    }
}

impl Progress {
    fn stage_name(&self) -> Option<&'static str> {
        match self.stage.load(Ordering::Relaxed) {
            1 => Some("reading"),
            2 => Some("writing"),
            3 => Some("done"),
            _ => None,
        }
    }
}

/// Runs `job` on a runtime of its own with the GIL released, waking
/// every [`SLICE`] to pass progress to `callback` and to check Python's
/// signals. On a signal (Ctrl-C: `KeyboardInterrupt`) the job is
/// aborted, every task of the runtime ends, `clean_up` runs, and the
/// signal's exception is raised.
fn run_interruptible<T: Send + 'static>(
    py: Python<'_>,
    job: impl Future<Output = leakless::Result<T>> + Send + 'static,
    progress: Option<(&Arc<Progress>, &Bound<'_, PyAny>)>,
    clean_up: impl FnOnce() -> leakless::Result<()> + Send,
) -> PyResult<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LeaklessError::new_err(format!("starting the runtime: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Shared with the thread that waits without the GIL.
    let rx = std::sync::Mutex::new(rx);
    let task = runtime.spawn(job);
    let abort = task.abort_handle();
    runtime.spawn(async move {
        let _ = tx.send(task.await);
    });
    let mut shown = (None, u64::MAX);
    let report = |shown: &mut (Option<&'static str>, u64)| -> PyResult<()> {
        if let Some((state, callback)) = progress {
            let now = (state.stage_name(), state.rows.load(Ordering::Relaxed));
            if now != *shown && now.0.is_some() {
                *shown = now;
                callback.call1((now.0, now.1))?;
            }
        }
        Ok(())
    };
    loop {
        let received = py.detach(|| match rx.lock() {
            Ok(rx) => rx.recv_timeout(SLICE),
            Err(_) => Err(RecvTimeoutError::Disconnected),
        });
        match received {
            Ok(finished) => {
                py.detach(|| drop(runtime));
                report(&mut shown)?;
                return match finished {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) => Err(to_py(py, &e)),
                    Err(e) => Err(LeaklessError::new_err(format!(
                        "internal error: the job stopped: {e}"
                    ))),
                };
            }
            Err(RecvTimeoutError::Timeout) => {
                let interrupted = py.check_signals().and_then(|()| report(&mut shown));
                if let Err(signal) = interrupted {
                    abort.abort();
                    // Dropping the runtime waits for every task, blocking
                    // ones included, to end: nothing writes after this.
                    py.detach(|| drop(runtime));
                    // The signal is what the caller sees; a failed cleanup
                    // is its cause.
                    if let Err(e) = py.detach(clean_up) {
                        signal.set_cause(py, Some(to_py(py, &e)));
                    }
                    return Err(signal);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(LeaklessError::new_err(
                    "internal error: the job ended without a result",
                ));
            }
        }
    }
}

/// `NAME=PATH` overrides from a dict.
fn overrides(sources: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, PathBuf)>> {
    let mut pairs = Vec::new();
    for (name, path) in sources.into_iter().flat_map(|d| d.iter()) {
        pairs.push((name.extract::<String>()?, path.extract::<PathBuf>()?));
    }
    Ok(pairs)
}

/// Builds the dataset of `spec` at `out`; the summary as JSON (the
/// command line's `--json`).
#[pyfunction]
#[pyo3(signature = (spec, out, *, watermark=None, overwrite=false, sources=None,
    partitions=None, shards=None, incremental=false, format=None, bad_rows="fail", max_bad_rows=None,
    publish_on_failed_checks=false, wait=false, ignore=None, watermark_margin=None,
    scheduler=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn build(
    py: Python<'_>,
    spec: &Bound<'_, PyAny>,
    out: PathBuf,
    watermark: Option<&str>,
    overwrite: bool,
    sources: Option<&Bound<'_, PyDict>>,
    partitions: Option<usize>,
    shards: Option<usize>,
    incremental: bool,
    format: Option<&str>,
    bad_rows: &str,
    max_bad_rows: Option<f64>,
    publish_on_failed_checks: bool,
    wait: bool,
    ignore: Option<Vec<String>>,
    watermark_margin: Option<&str>,
    scheduler: Option<String>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let ignore = ignore.unwrap_or_default();
    let invalid = |m: String| to_py(py, &Error::Invalid(m));
    let watermark = match watermark {
        None => None,
        Some(text) => Some(
            leakless::time::parse_timestamp_micros(text.as_bytes()).ok_or_else(|| {
                invalid(format!(
                    "watermark {text:?} is not an RFC 3339 timestamp (e.g. 2026-10-31T00:00:00Z)"
                ))
            })?,
        ),
    };
    let bad_rows = match bad_rows {
        "fail" => leakless::ingest::BadRowPolicy::Fail,
        "quarantine" => leakless::ingest::BadRowPolicy::Quarantine,
        other => {
            return Err(invalid(format!(
                "bad_rows {other:?} is not \"fail\" or \"quarantine\""
            )));
        }
    };
    if let Some(f) = max_bad_rows.filter(|f| !(0.0..=1.0).contains(f)) {
        return Err(invalid(format!(
            "max_bad_rows {f} is not a fraction of a source's rows (0 to 1)"
        )));
    }
    if max_bad_rows.is_some() && bad_rows == leakless::ingest::BadRowPolicy::Fail {
        return Err(invalid(
            "max_bad_rows is the gate of bad_rows=\"quarantine\"; without it the first bad row stops the build".into(),
        ));
    }
    if partitions == Some(0) {
        return Err(invalid("partitions must be at least 1".into()));
    }
    if shards == Some(0) {
        return Err(invalid("shards must be at least 1".into()));
    }
    let margin = leakless::spec::parse_duration(watermark_margin.unwrap_or("7d"), true)
        .map_err(|e| invalid(format!("watermark_margin: {e}")))?;
    let format =
        match format {
            None => None,
            Some(name) => Some(OutputFormat::parse(name).ok_or_else(|| {
                invalid(format!("format {name:?} is not \"parquet\" or \"delta\""))
            })?),
        };
    let overrides = overrides(sources)?;
    let mut job = match spec.cast::<PyDict>() {
        Ok(_) => Build::from_spec(load_spec(py, spec, &overrides, &ignore)?, &out),
        // Built as the command line builds it (the manifest names the file).
        Err(_) => {
            let file = spec_path(spec)?;
            py.detach(|| Build::from_spec_file_with(&file, &out, &overrides, &ignore))
                .map_err(|e| match e {
                    Error::Spec(errors) => spec_error(py, errors),
                    e => to_py(py, &e),
                })?
        }
    };
    let state = Arc::new(Progress::default());
    job = job
        .with_watermark(watermark)
        .with_overwrite(overwrite)
        .with_wait(wait)
        .with_watermark_margin(margin)
        .with_ignore(&ignore)
        .with_bad_rows(bad_rows)
        .with_max_bad_rows(max_bad_rows)
        .with_publish_on_failed_checks(publish_on_failed_checks)
        .with_incremental(incremental)
        .with_shards(shards)
        .with_reporter(state.clone());
    if let Some(n) = partitions {
        job = job.with_target_partitions(n);
    }
    if let Some(format) = format {
        job = job.with_format(format);
    }
    let format = job.spec().format;
    let started = Instant::now();
    let summary = run_interruptible(
        py,
        async move {
            match scheduler {
                None => job.execute().await,
                Some(address) => {
                    job.execute_on(&leakless_cluster::Cluster::new(&address))
                        .await
                }
            }
        },
        progress.map(|callback| (&state, callback)),
        || leakless::write::clean_up(&out, format),
    )?;
    let mut value = serde_json::to_value(&summary)
        .map_err(|e| LeaklessError::new_err(format!("the summary as JSON: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    value["seconds"] = serde_json::json!((seconds * 1000.0).round() / 1000.0);
    Ok(value.to_string())
}

/// Checks a spec against its inputs' headers; the report as JSON.
#[pyfunction]
#[pyo3(signature = (spec, *, sources=None, ignore=None))]
fn check(
    py: Python<'_>,
    spec: &Bound<'_, PyAny>,
    sources: Option<&Bound<'_, PyDict>>,
    ignore: Option<Vec<String>>,
) -> PyResult<String> {
    let spec = load_spec(py, spec, &overrides(sources)?, &ignore.unwrap_or_default())?;
    let report = py
        .detach(|| leakless::check::check(&spec))
        .map_err(|e| to_py(py, &e))?;
    serde_json::to_string(&report).map_err(|e| LeaklessError::new_err(e.to_string()))
}

/// Every output column's definition; as JSON.
#[pyfunction]
fn explain(py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<String> {
    let spec = load_spec(py, spec, &[], &[])?;
    serde_json::to_string(&leakless::check::explain(&spec))
        .map_err(|e| LeaklessError::new_err(e.to_string()))
}

/// Generates a seeded marketplace into `out`; its totals as JSON.
#[pyfunction]
#[pyo3(signature = (out, *, impressions, listings=None, users=None, days=30,
    start="2026-10-01", seed=42, format="csv"))]
#[allow(clippy::too_many_arguments)]
fn generate(
    py: Python<'_>,
    out: PathBuf,
    impressions: u64,
    listings: Option<u64>,
    users: Option<u64>,
    days: u32,
    start: &str,
    seed: u64,
    format: &str,
) -> PyResult<String> {
    let invalid = |m: String| to_py(py, &Error::Invalid(m));
    let mut params = leakless::synth::Params::new(impressions);
    if let Some(n) = listings {
        params.listings = n;
    }
    if let Some(n) = users {
        params.users = n;
    }
    params.days = days;
    params.seed = seed;
    params.format = match format {
        "csv" => leakless::synth::OutputFormat::Csv,
        "parquet" => leakless::synth::OutputFormat::Parquet,
        other => {
            return Err(invalid(format!(
                "format {other:?} is not \"csv\" or \"parquet\""
            )));
        }
    };
    params.start = leakless::time::parse_date(start)
        .ok_or_else(|| invalid(format!("start {start:?} is not a date like 2026-10-01")))?;
    let generated = py
        .detach(|| leakless::synth::generate(&params, &out))
        .map_err(|e| to_py(py, &e))?;
    serde_json::to_string(&generated.totals).map_err(|e| LeaklessError::new_err(e.to_string()))
}

/// A dataset's rows as an Arrow C stream (`__arrow_c_stream__`), read
/// once.
#[pyclass(module = "leakless._leakless")]
struct DatasetStream {
    reader: std::sync::Mutex<Option<leakless::write::DatasetReader>>,
}

#[pymethods]
impl DatasetStream {
    /// The Arrow PyCapsule interface: the stream, for pyarrow or Polars.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = (self.reader.lock())
            .map_err(|_| LeaklessError::new_err("this dataset stream failed"))?
            .take()
            .ok_or_else(|| LeaklessError::new_err("this dataset stream was read already"))?;
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}

/// Opens the dataset at `out` for reading.
#[pyfunction]
fn open_dataset(py: Python<'_>, out: PathBuf) -> PyResult<DatasetStream> {
    let reader = py
        .detach(|| leakless::write::read_dataset(&out))
        .map_err(|e| to_py(py, &e))?;
    Ok(DatasetStream {
        reader: std::sync::Mutex::new(Some(reader)),
    })
}

/// The `leakless` command line on `args` (without the program's name);
/// the exit status.
#[pyfunction]
fn cli(py: Python<'_>, args: Vec<String>) -> u8 {
    let argv: Vec<String> = std::iter::once("leakless".to_owned()).chain(args).collect();
    py.detach(|| leakless_cli::exit_status(leakless_cli::main_with(argv)))
}

#[pymodule]
fn _leakless(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(explain, m)?)?;
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(open_dataset, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_class::<DatasetStream>()?;
    m.add("LeaklessError", py.get_type::<LeaklessError>())?;
    m.add("SpecError", py.get_type::<SpecError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("QualityError", py.get_type::<QualityError>())?;
    m.add("OutputError", py.get_type::<OutputError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    Ok(())
}
