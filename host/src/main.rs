//! The `doctor` binary: everything is in the library; this only hands the
//! exit code of `cli::main` to the process.

fn main() {
    std::process::exit(doctor::cli::main());
}
