//! The broker binary, built inside this package so that integration tests get
//! its path through `CARGO_BIN_EXE_switchyard-under-test`.

fn main() -> std::process::ExitCode {
    switchyard_server::main_entry()
}
