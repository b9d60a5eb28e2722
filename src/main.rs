// mimalloc: the event pipeline frees on its thread what the proxy threads allocated; glibc's
// allocator pays for that with arena locks and consolidation (measured in the trigger benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    payedge::cli::main()
}
