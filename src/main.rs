//! The `gavel` command; everything lives in `gavel::cli`.

fn main() -> std::process::ExitCode {
    gavel::cli::main()
}
