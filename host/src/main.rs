fn main() {
    std::process::exit(doctor::cli::main());
}
