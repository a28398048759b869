//! The demo's live view: timestamped event lines, and on a terminal one status line below
//! them that is redrawn in place (progress bar, leader, TaskManagers). Off a terminal only
//! the events are printed, so a log of the demo stays readable.

use std::io::{IsTerminal, Write};
use std::time::Instant;

pub struct View {
    started: Instant,
    to_stderr: bool,
    redraw: bool,
    status_shown: bool,
}

impl View {
    /// `to_stderr` when stdout is reserved for a JSON document.
    pub fn new(to_stderr: bool) -> View {
        let redraw = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        View {
            started: Instant::now(),
            to_stderr,
            redraw,
            status_shown: false,
        }
    }

    fn write(&self, text: &str) {
        // A closed terminal is no reason to stop the demo half-way (and leave it unclean).
        if self.to_stderr {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    fn clear_status(&mut self) -> &'static str {
        if std::mem::take(&mut self.status_shown) {
            "\r\x1b[2K"
        } else {
            ""
        }
    }

    /// A line of its own, stamped with the time since the demo began.
    pub fn event(&mut self, message: &str) {
        let clear = self.clear_status();
        let secs = self.started.elapsed().as_secs_f64();
        self.write(&format!("{clear}{secs:>6.1}s  {message}\n"));
    }

    /// A plain line (headings, the summary).
    pub fn line(&mut self, message: &str) {
        let clear = self.clear_status();
        self.write(&format!("{clear}{message}\n"));
    }

    /// Replace the status line (terminals only).
    pub fn status(&mut self, line: &str) {
        if !self.redraw {
            return;
        }
        let clear = self.clear_status();
        self.write(&format!("{clear}        {line}"));
        self.status_shown = true;
    }

    pub fn finish(&mut self) {
        let clear = self.clear_status();
        self.write(clear);
    }
}

/// `██████▒▒▒·····`: finished, running, waiting, in `width` cells.
pub fn progress_bar(finished: usize, running: usize, total: usize, width: usize) -> String {
    if total == 0 {
        return "·".repeat(width);
    }
    let cells = |n: usize| (n * width + total / 2) / total;
    let done = cells(finished).min(width);
    let busy = cells(finished + running).min(width) - done;
    format!(
        "{}{}{}",
        "█".repeat(done),
        "▒".repeat(busy),
        "·".repeat(width - done - busy)
    )
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(progress_bar(0, 0, 10, 10), "··········");
        assert_eq!(progress_bar(5, 2, 10, 10), "█████▒▒···");
        assert_eq!(progress_bar(10, 0, 10, 10), "██████████");
        assert_eq!(progress_bar(1, 0, 3, 6), "██····");
        assert_eq!(progress_bar(0, 0, 0, 3), "···");
    }
}
