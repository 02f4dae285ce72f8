//! Standard output for every command (review of issue 12): the whole text written to the
//! locked standard output and flushed, the failure returned instead of the panic of `print!`
//! ("failed printing to stdout: Broken pipe", status 101) when the reader has gone —
//! `keyfed env aws | true`, `keyfed doctor --json | head -1`. keyfed, as every Rust program,
//! ignores SIGPIPE, so such a write fails with `EPIPE`; `exit.rs` then ends keyfed quietly with
//! status 141, as a shell reports a program killed by SIGPIPE.

use std::io::{self, Write as _};

/// Standard output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct Error(#[source] io::Error);

impl Error {
    /// Whether the reader has gone: a pipe closed at its other end.
    pub fn reader_gone(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Writes `text` to standard output and flushes it.
pub fn write(text: impl AsRef<[u8]>) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .map_err(Error)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The error a failed write of standard output gives.
    pub fn error(e: io::Error) -> Error {
        Error(e)
    }
}
