//! `aside-origin`: see `aside-origin --help`.

fn main() -> std::process::ExitCode {
    aside_origin::cli::main()
}
