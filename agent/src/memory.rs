//! The daemon's use of the C allocator. A reload builds a new policy while
//! the old one still enforces, then frees the old one; glibc keeps freed
//! memory in per-thread arenas and raises its mmap threshold after large
//! frees, so without these settings the daemon's resident size grows to the
//! largest reload it has seen and stays there.

/// Call before any thread starts: at most two arenas (the daemon runs two
/// runtime workers), and a fixed mmap threshold so large buffers (policy
/// text, parse tables) always come from and go back to the kernel.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before other
    // threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// Return freed memory to the kernel (after a reload, after start).
pub fn release() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and only releases free memory;
    // mallinfo2 only reads the allocator's counters.
    unsafe {
        libc::malloc_trim(0);
        let m = libc::mallinfo2();
        tracing::debug!(
            in_use_mib = m.uordblks as f64 / 1048576.0,
            free_mib = m.fordblks as f64 / 1048576.0,
            mmapped_mib = m.hblkhd as f64 / 1048576.0,
            "heap after a reload"
        );
    }
}
