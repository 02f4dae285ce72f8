//! The last step of every log line: the syslog priority prefix under the journal, one event on
//! one line (control characters and backslashes escaped, the text cut at 8 KiB) for text
//! everywhere but a terminal, and the timestamps of text lines. Also how keyfed knows it writes
//! to the journal.

use std::io::{self, Write as _};
use std::sync::Arc;

use keyfed_core::clock::{Clock, rfc3339_millis};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEVICE:INODE` in decimal) names
/// `stderr` (standard error's device and inode): systemd's documented test that standard error
/// is connected to the journal. Standard error redirected by a parent that inherited the
/// variable names something else.
pub(super) fn is_journal(journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let Some((device, inode)) = journal_stream.and_then(|s| s.split_once(':')) else {
        return false;
    };
    match (device.parse::<u64>(), inode.parse::<u64>(), stderr) {
        (Ok(device), Ok(inode), Some(stderr)) => (device, inode) == stderr,
        _ => false,
    }
}

/// Standard error's device and inode, if it is open.
pub(super) fn stderr_identity() -> Option<(u64, u64)> {
    let stat = rustix::fs::fstat(io::stderr()).ok()?;
    // The field types differ between architectures; both fit in u64 everywhere.
    #[allow(clippy::unnecessary_cast)]
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

/// The syslog priority of `level`, as journald reads it from a `<N>` prefix.
pub(super) fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Makes one [`Line`] per event, writing to `sink`.
pub(super) struct Lines<W> {
    sink: W,
    /// Prefix each line with its priority.
    journal: bool,
    /// Escape control characters, so that one event is one line.
    one_line: bool,
}

impl<W> Lines<W> {
    pub(super) fn new(sink: W, journal: bool, one_line: bool) -> Self {
        Self {
            sink,
            journal,
            one_line,
        }
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Lines<W> {
    type Writer = Line<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        self.make(&Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        self.make(meta.level())
    }
}

impl<'a, W: MakeWriter<'a>> Lines<W> {
    fn make(&'a self, level: &Level) -> Line<W::Writer> {
        Line {
            sink: self.sink.make_writer(),
            priority: self.journal.then(|| priority(level)),
            one_line: self.one_line,
            formatted: Vec::new(),
        }
    }
}

/// One event's line: collects what the formatter writes and hands it on, shaped, in one write
/// when dropped (the formatter writes each event whole, then drops its writer).
pub(super) struct Line<W: io::Write> {
    sink: W,
    priority: Option<u8>,
    one_line: bool,
    formatted: Vec<u8>,
}

impl<W: io::Write> io::Write for Line<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.formatted.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: io::Write> Drop for Line<W> {
    fn drop(&mut self) {
        if self.formatted.is_empty() {
            return;
        }
        let line = shape(&self.formatted, self.priority, self.one_line);
        // Nowhere to report a failure to write the log.
        let _ = self.sink.write_all(&line).and_then(|()| self.sink.flush());
    }
}

/// The most of an event's text a line holds, in bytes as written (escapes included); the rest
/// is cut, and [`cut_marker`] says how much. journald splits a line longer than its `LineMax`
/// (48 KiB by default) and reads a `<N>` priority at the start of every piece, which would then
/// be text from anywhere (an upstream's error): no event of keyfed's own comes near this.
pub(super) const MAX_TEXT: usize = 8 * 1024;

/// What stands in for the `cut` bytes of text a line does not hold.
pub(super) fn cut_marker(cut: usize) -> String {
    format!("…[{cut} bytes cut]")
}

/// `formatted` (one event, as formatted) as the line to write: with `<priority>` first (the
/// padding before the level dropped), one newline at the end, and if `one_line` control
/// characters and backslashes escaped (so that `\n` in a line is always a newline, never
/// someone's two characters) and the text cut at [`MAX_TEXT`].
pub(super) fn shape(formatted: &[u8], priority: Option<u8>, one_line: bool) -> Vec<u8> {
    let mut body = formatted.strip_suffix(b"\n").unwrap_or(formatted);
    let mut line = Vec::with_capacity(body.len() + 8);
    if let Some(priority) = priority {
        let _ = write!(line, "<{priority}>");
        body = body.trim_ascii_start();
    }
    if one_line {
        let start = line.len();
        // A formatter writes `str`s: nothing is lost (nor any byte of a character split).
        let text = String::from_utf8_lossy(body);
        for (at, c) in text.char_indices() {
            let before = line.len();
            escape(c, &mut line);
            if line.len() - start > MAX_TEXT {
                line.truncate(before);
                line.extend_from_slice(cut_marker(text.len() - at).as_bytes());
                break;
            }
        }
    } else {
        line.extend_from_slice(body);
    }
    line.push(b'\n');
    line
}

/// `c` as a one-line text line writes it.
fn escape(c: char, into: &mut Vec<u8>) {
    match c {
        '\n' => into.extend_from_slice(b"\\n"),
        '\r' => into.extend_from_slice(b"\\r"),
        '\\' => into.extend_from_slice(b"\\\\"),
        '\t' => into.push(b'\t'),
        // journald also ends a line at NUL; the rest would garble a terminal or a reader.
        '\0'..='\x1f' | '\x7f' => {
            let _ = write!(into, "\\x{:02x}", u32::from(c));
        }
        c => into.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
}

/// Timestamps of text lines, in UTC: RFC 3339 with milliseconds, or only the time of day.
pub(super) struct Utc {
    clock: Arc<dyn Clock>,
    short: bool,
}

impl Utc {
    /// `2026-01-02T12:41:05.123Z`.
    pub(super) fn full(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            short: false,
        }
    }

    /// `12:41:05.123Z`: on a terminal, where someone is watching it now.
    pub(super) fn short(clock: Arc<dyn Clock>) -> Self {
        Self { clock, short: true }
    }
}

impl FormatTime for Utc {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let full = rfc3339_millis(self.clock.now());
        let shown = match full.split_once('T') {
            Some((_, time)) if self.short => time,
            _ => &full,
        };
        w.write_str(shown)
    }
}
