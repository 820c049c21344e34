// Training allocates and frees thousands of short-lived tensors per step; mimalloc's thread-local free lists make
// that cheaper than glibc malloc (before/after in README, Speed).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(tessera::cli::main());
}
