//! The `wharf` command; its documentation is the `wharf_cli` crate's.

use std::process::ExitCode;

fn main() -> ExitCode {
    wharf_cli::main()
}
