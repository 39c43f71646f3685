//! The `switchyard` executable; everything lives in the library's
//! [`switchyard_server::main_entry`].

fn main() -> std::process::ExitCode {
    switchyard_server::main_entry()
}
