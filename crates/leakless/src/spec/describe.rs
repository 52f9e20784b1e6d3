//! Every output column's exact definition in words (`leakless explain`, the
//! manifest).

use super::{Derived, Op, Role, SourceKind, Spec, ValueType, Window, format_duration};

/// `(column, definition)` for every output column, in output order.
pub(super) fn definitions(spec: &Spec) -> Vec<(String, String)> {
    let spine = &spec.spine;
    let mut out: Vec<(String, String)> = spine
        .columns
        .iter()
        .map(|c| (c.clone(), format!("from `{}`", spine.source)))
        .collect();
    out.push((
        spine.time.clone(),
        format!(
            "from `{}`, UTC microseconds: the row's time t",
            spine.source
        ),
    ));
    for d in &spec.derived {
        out.push((d.name.clone(), describe(spec, d)));
    }
    out
}

fn describe(spec: &Spec, d: &Derived) -> String {
    let source = spec.source(&d.source).expect("resolved source");
    let key = d
        .key
        .iter()
        .map(|k| {
            if k.spine == k.source {
                format!("`{}`", k.spine)
            } else {
                format!("`{}` = `{}`.`{}`", k.spine, d.source, k.source)
            }
        })
        .collect::<Vec<_>>()
        .join(" and ");
    let column = d.column.as_deref().unwrap_or("");
    if let SourceKind::Dimension { valid_from, .. } = &source.kind {
        let row = match valid_from {
            None => format!(
                "the row of `{}` with the same {key} (a snapshot: it applies whatever t is, and may postdate t)",
                d.source
            ),
            Some(v) => format!(
                "the version of `{}` with the same {key} and the greatest `{v}` < t{}",
                d.source,
                delay(source.delay_micros)
            ),
        };
        return match d.op {
            Op::TimeSince => format!(
                "floor((t - `{column}`) / 1 s) of {row}; null when there is none or `{column}` is null"
            ),
            _ => format!("`{column}` of {row}; null when there is none"),
        };
    }
    let time = source.time_column().unwrap_or("time");
    let (lo, hi) = match (d.role, d.window) {
        (Role::Feature, Some(Window::Lifetime)) | (Role::Feature, None) => {
            (None, format!("t{}", delay(source.delay_micros)))
        }
        (Role::Feature, Some(Window::Micros(w))) => (
            Some(format!(
                "t{} - {}",
                delay(source.delay_micros),
                format_duration(w)
            )),
            format!("t{}", delay(source.delay_micros)),
        ),
        (Role::Label, w) => {
            let w = match w {
                Some(Window::Micros(w)) => w,
                _ => 0,
            };
            let start = if d.offset_micros == 0 {
                "t".to_owned()
            } else {
                format!("t + {}", format_duration(d.offset_micros))
            };
            (
                Some(start.clone()),
                format!("{start} + {}", format_duration(w)),
            )
        }
    };
    let range = match lo {
        Some(lo) => format!("{lo} <= `{time}` < {hi}"),
        None => format!("`{time}` < {hi}"),
    };
    let events = format!(
        "events of `{}` with the same {key}{} and {range}",
        d.source,
        d.filter
            .as_ref()
            .map(|w| format!(" where ({w}) is true"))
            .unwrap_or_default()
    );
    let ties = "ties at one instant in input order (files in path order, then rows)";
    let what = match d.op {
        Op::Count => format!("number of {events}"),
        Op::Exists => format!("1 when there is at least one of the {events}, else 0"),
        Op::Sum if d.output_type == ValueType::Float64 => format!(
            "sum of non-null `{column}` over the {events} (0 when none; the exact sum, rounded once to float64)"
        ),
        Op::Sum => format!("sum of non-null `{column}` over the {events} (0 when none; exact)"),
        Op::Mean => format!("mean of non-null `{column}` over the {events}; null when none"),
        Op::Min => format!("smallest non-null `{column}` over the {events}; null when none"),
        Op::Max => format!("largest non-null `{column}` over the {events}; null when none"),
        Op::First => {
            format!(
                "`{column}` of the earliest such event with `{column}` not null, among the {events}; {ties}; null when none"
            )
        }
        Op::Last => {
            format!(
                "`{column}` of the latest such event with `{column}` not null, among the {events}; {ties}; null when none"
            )
        }
        Op::CountDistinct => {
            format!("number of distinct non-null `{column}` values over the {events}")
        }
        Op::TimeSinceLast => {
            format!("floor((t - `{time}`) / 1 s) of the latest of the {events}; null when none")
        }
        Op::TimeSinceFirst => {
            format!("floor((t - `{time}`) / 1 s) of the earliest of the {events}; null when none")
        }
        Op::Lookup | Op::TimeSince => unreachable!("dimension ops are described above"),
    };
    match d.role {
        Role::Feature => what,
        Role::Label => format!("{what}; rows with {} > watermark are held back", {
            let w = match d.window {
                Some(Window::Micros(w)) => w,
                _ => 0,
            };
            if d.offset_micros == 0 {
                format!("t + {}", format_duration(w))
            } else {
                format!(
                    "t + {} + {}",
                    format_duration(d.offset_micros),
                    format_duration(w)
                )
            }
        }),
    }
}

fn delay(micros: i64) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(" - {} (delay)", format_duration(micros))
    }
}
