// Training allocates and frees thousands of short-lived tensors per step; mimalloc's thread-local free lists make
// that cheaper than glibc malloc (before/after in README, Speed).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` of mimalloc v3 (libmimalloc-sys's default; its bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its documented default (ms); checked before the option is changed, so a renumbered enum changes nothing.
const MI_PURGE_DELAY_DEFAULT: std::os::raw::c_long = 1000;

/// Keeps freed memory mapped instead of returning it to the OS after a second. A training step frees and re-allocates
/// the same large activation buffers every few milliseconds; returned pages come back as fresh zeroed (huge) pages
/// through page faults — 18 % of a small-preset training step in `perf` before this, 8× fewer page faults after.
fn keep_freed_memory() {
    // SAFETY: plain option getters/setters of the allocator, called before any other thread exists.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

/// Restores the default action for a closed output pipe (end the process quietly), which the Rust runtime turns off:
/// `tessera eval … --json | head` would otherwise panic in `println!` once `head` has read enough.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    keep_freed_memory();
    quiet_on_closed_pipe();
    std::process::exit(tessera::cli::main());
}
