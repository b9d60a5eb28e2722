//! Lines for whoever reads a command's output. `println!` and `eprintln!` panic when the reader
//! has gone (`payedge check -c f.yaml | head`: a panic message and exit 101 instead of the
//! check's exit code); these report whether the line was written, and the commands go on (or,
//! for `watch`, stop) quietly.

use std::io::Write;

/// Writes `line` and a newline to standard output; false when it could not be written.
pub fn out(line: &str) -> bool {
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

/// Writes `line` and a newline to standard error; false when it could not be written.
pub fn err(line: &str) -> bool {
    writeln!(std::io::stderr().lock(), "{line}").is_ok()
}
