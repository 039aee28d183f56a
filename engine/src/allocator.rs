//! How the binaries' allocator (mimalloc) keeps freed memory.
//!
//! mimalloc gives freed pages back to the kernel a second after they fall free. A query
//! engine frees most of its memory at the end of each query (hash tables, aggregation
//! state, decoded batches) and needs it again for the next one, so the kernel has to
//! fault and zero those pages afresh every time: without the memory kept, the TPC-H
//! queries spend a large share of their CPU in the kernel's `clear_page_erms`, the
//! queries with the largest hash tables (Q18, Q21, Q9) most (figures:
//! docs/benchmarks/log.md#2026-12-04-freed-memory-kept-for-the-next-query-kept). Keeping
//! it bounds the process at its peak (which the memory pool, `--memory-limit`, bounds in
//! turn), as a database's buffer pool does.

/// mimalloc's `mi_option_purge_delay` (the same index in mimalloc v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory in the allocator for reuse instead of returning it to the kernel,
/// unless `MIMALLOC_PURGE_DELAY` is set (mimalloc reads it at start-up; the user's
/// choice wins). Call first thing in `main`.
pub fn retain_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets an integer option; mimalloc's options are atomics, safe to set from
    // any thread at any time, and -1 is a documented value ("no purging at all").
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn purge_delay() -> i64 {
        // SAFETY: reads an integer option.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
    }

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        // mimalloc's options are numbered by an enum in its C header; the value read
        // must be what MIMALLOC_PURGE_DELAY (or mimalloc 3's default) says it is, or the
        // index names another option.
        let from_env = std::env::var("MIMALLOC_PURGE_DELAY").ok();
        let expected = from_env
            .as_deref()
            .map_or(1000, |v| v.parse().unwrap_or(1000));
        assert_eq!(purge_delay(), expected);
        retain_freed_memory();
        assert_eq!(
            purge_delay(),
            if from_env.is_some() { expected } else { -1 }
        );
    }
}
