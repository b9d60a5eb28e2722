fn main() -> std::process::ExitCode {
    payedge::cli::main()
}
