//! The process's allocator: mimalloc, asked the way the C library's `malloc` is asked.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request through mimalloc's aligned entry
//! points (`mi_malloc_aligned(size, align)`), whatever the alignment. mimalloc 3 takes those on a
//! fast path only for small sizes whose free block happens to be aligned; the rest go through its
//! generic aligned path, which over-allocates (and marks the page as holding interior pointers)
//! whenever the block size is not a power of two, although any block would have been aligned
//! enough. Under the proxy load that was about 14 of a request's 104 allocations.
//!
//! Every mimalloc block of 16 bytes or more is 16-byte aligned and a smaller one is 8-byte
//! aligned (blocks are whole double words on 64-bit targets, `MI_MAX_ALIGN_SIZE` being 16: what
//! C's `malloc` promises for `max_align_t`). So a layout whose alignment is at most 16 and at
//! most its size is served by plain `mi_malloc`, as Rust's own `System` allocator serves it by
//! `malloc`; anything else still takes the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// The alignment every `mi_malloc` block of at least that many bytes has (`MI_MAX_ALIGN_SIZE`).
const MALLOC_ALIGN: usize = 16;

pub struct MiMalloc;

/// Whether `mi_malloc(size)` is aligned enough for `align`.
#[inline(always)]
fn plain(size: usize, align: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every pointer returned comes from mimalloc with at least the layout's size and
// alignment (above, and checked by the tests below for every alignment up to a page); `mi_free`
// and `mi_realloc*` accept pointers from any of mimalloc's allocation functions.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: plain C calls; mimalloc returns null on failure, as GlobalAlloc expects.
        unsafe {
            if plain(size, align) {
                mi_malloc(size).cast()
            } else {
                mi_malloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(size, align) {
                mi_zalloc(size).cast()
            } else {
                mi_zalloc_aligned(size, align).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            if plain(new_size, align) {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes up to 5 KiB (small, medium and non-power-of-two block sizes), then some
    /// large ones, at every alignment up to a page: each block is aligned, writable over its
    /// whole size, zeroed when asked, keeps its bytes when grown or shrunk, and is freed.
    #[test]
    fn blocks_are_aligned_for_every_layout_and_keep_their_bytes_through_realloc() {
        let a = MiMalloc;
        let sizes = (1..=1100).chain((1100..=5 * 1024).step_by(7)).chain([
            8191,
            8192,
            15_615,
            65_536,
            100_001,
            1 << 21,
        ]);
        for size in sizes {
            for shift in 0..=12 {
                let align = 1usize << shift;
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every pointer is checked, used within its layout
                // and freed with it.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xa5, size);

                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed: size {size}, align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);

                    for new_size in [size / 2 + 1, size * 3 + 7] {
                        let layout_now = Layout::from_size_align(size, align).unwrap();
                        let q = a.alloc(layout_now);
                        q.write_bytes(0x5a, size);
                        let r = a.realloc(q, layout_now, new_size);
                        assert!(!r.is_null());
                        assert_eq!(
                            r as usize % align,
                            0,
                            "realloc {size} -> {new_size}, {align}"
                        );
                        let kept = std::slice::from_raw_parts(r, size.min(new_size));
                        assert!(kept.iter().all(|&b| b == 0x5a), "realloc lost bytes");
                        r.write_bytes(1, new_size);
                        a.dealloc(r, Layout::from_size_align(new_size, align).unwrap());
                    }
                    a.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn only_layouts_malloc_already_aligns_skip_the_aligned_entry_points() {
        assert!(plain(1, 1) && plain(8, 8) && plain(24, 8) && plain(1500, 8) && plain(32, 16));
        assert!(plain(16, 16) && plain(24, 16));
        // Alignment beyond what malloc promises, or beyond the size (an 8-byte block is only
        // 8-byte aligned).
        assert!(!plain(64, 32) && !plain(4096, 4096) && !plain(8, 16) && !plain(1, 2));
    }
}
