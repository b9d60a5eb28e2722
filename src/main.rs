// mimalloc: the event pipeline frees on its thread what the proxy threads allocated; glibc's
// allocator pays for that with arena locks and consolidation (measured in the trigger benchmark).
// Asked like malloc where malloc's alignment suffices (src/allocator.rs).
#[global_allocator]
static ALLOCATOR: payedge::allocator::MiMalloc = payedge::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    payedge::cli::main()
}
