//! The program's allocator: the system's, with every block of 64 KiB or more starting on
//! a 64-byte boundary (a cache line, an AVX-512 vector).
//!
//! glibc's `malloc` aligns to 16 bytes, so a volume's rows (48 or 96 floats, whole cache
//! lines) start mid-line three times in four, and each 64-byte load or store of a row
//! then touches two lines. The CPU kernels read and write rows that way, the weight
//! gradient most (its input and output gradient in place): README, "Training on the CPU".
//!
//! A large block is a plain `malloc` of 64 bytes more, handed out from its first line
//! boundary past 8 bytes, where the block's own address is kept for `free`. glibc's
//! `posix_memalign` would give the alignment too, but its blocks reuse poorly (each asks
//! for more than a freed block of the same size holds): peak memory of a training step
//! went from 1.6 to 2.1 GB with it.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks this large and up are aligned to [`LINE`]: tensors and their scratch buffers,
/// not the many small allocations.
const LARGE: usize = 64 << 10;
const LINE: usize = 64;

pub struct LargeAligned;

/// Whether `layout` is served line-aligned (a larger alignment asked for goes to
/// `System` as it is).
fn large(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= 16
}

/// The `malloc` block behind a large `layout`: a line more.
fn padded(layout: Layout) -> Layout {
    // Safety: the alignment is `layout`'s, and the size stays far below isize::MAX (a
    // layout's size is below it and `LINE` is small).
    unsafe { Layout::from_size_align_unchecked(layout.size() + LINE, layout.align()) }
}

/// The first line boundary at least 8 bytes into `block`, with `block` stored in the 8
/// bytes before it. `malloc` aligns to 8 bytes at least, so the boundary is at most
/// `LINE` bytes in.
unsafe fn place(block: *mut u8) -> *mut u8 {
    if block.is_null() {
        return block;
    }
    let address = block as usize;
    let start = block.add((address + 8).next_multiple_of(LINE) - address);
    start.cast::<*mut u8>().sub(1).write_unaligned(block);
    start
}

/// The block [`place`] handed `ptr` out of.
unsafe fn block(ptr: *mut u8) -> *mut u8 {
    ptr.cast::<*mut u8>().sub(1).read_unaligned()
}

// Safety: small blocks are `System`'s own; a large one is a `System` block of `padded`
// layout, released with that layout, and `place` keeps the handed-out range
// (`layout.size()` bytes from a line boundary at most `LINE` bytes in) inside it.
unsafe impl GlobalAlloc for LargeAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout) {
            place(System.alloc(padded(layout)))
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // `calloc`: fresh pages are not cleared twice.
        if large(layout) {
            place(System.alloc_zeroed(padded(layout)))
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(layout) {
            System.dealloc(block(ptr), padded(layout))
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        if !large(layout) && !large(new) {
            return System.realloc(ptr, layout, new_size);
        }
        let moved = self.alloc(new);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_line_aligned_and_keep_their_bytes_when_resized() {
        let a = LargeAligned;
        unsafe {
            let small = Layout::from_size_align(1000, 4).unwrap();
            let p = a.alloc(small);
            (0..1000).for_each(|i| *p.add(i) = i as u8);
            // Small -> large: moved, now aligned.
            let q = a.realloc(p, small, 300 << 10);
            assert_eq!(q as usize % LINE, 0);
            assert!((0..1000).all(|i| *q.add(i) == i as u8));
            // Large -> larger: still aligned, the bytes kept, the new end writable.
            let large = Layout::from_size_align(300 << 10, 4).unwrap();
            let r = a.realloc(q, large, 900 << 10);
            assert_eq!(r as usize % LINE, 0);
            assert!((0..1000).all(|i| *r.add(i) == i as u8));
            *r.add((900 << 10) - 1) = 7;
            // Large -> small: moved back, the bytes kept.
            let s = a.realloc(r, Layout::from_size_align(900 << 10, 4).unwrap(), 500);
            assert!((0..500).all(|i| *s.add(i) == i as u8));
            a.dealloc(s, Layout::from_size_align(500, 4).unwrap());
            for size in [LARGE, 1 << 20, 50 << 20] {
                let layout = Layout::from_size_align(size, 4).unwrap();
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % LINE, 0, "{size} bytes");
                assert!(*z == 0 && *z.add(size - 1) == 0);
                a.dealloc(z, layout);
            }
        }
    }
}
