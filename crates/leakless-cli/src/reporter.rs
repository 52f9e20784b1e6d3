//! Progress on stderr with indicatif, hidden when stderr is not a terminal
//! or with `--quiet`; it uses no colour. Only the binary knows indicatif:
//! the library reports through [`leakless::Reporter`].

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use leakless::{Reporter, Stage};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Reporter for Progress {
    fn stage(&self, stage: Stage) {
        match stage {
            Stage::Reading => self.bar.set_message("reading inputs"),
            Stage::Writing => self.bar.set_message("writing parquet"),
            Stage::Done => self.bar.finish_and_clear(),
        }
    }

    fn rows(&self, rows: u64) {
        self.bar.set_message(format!("computed {rows} rows"));
    }
}
