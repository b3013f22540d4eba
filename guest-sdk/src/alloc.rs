//! The guest's memory allocator: small blocks (up to 4 KiB) come from
//! free lists, one per power-of-two size class, carved out of 64 KiB chunks;
//! larger blocks go to the standard allocator. A per-record function
//! allocates and frees a few small blocks per record (a key, a value, an
//! output list); a free-list pop or push is a handful of instructions, far
//! less than the general-purpose allocator's bookkeeping, and that is a
//! large share of a simple function's cost.
//!
//! Installed for wasm32 builds without threads (the only kind of guest the
//! host runs) when the `allocator` feature is on (the default). A guest that
//! wants its own allocator turns the feature off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

const CLASSES: usize = 10; // 8, 16, ..., 4096 bytes
const MAX_SMALL: usize = 8 << (CLASSES - 1);
const CHUNK: usize = 64 * 1024;

/// The allocator. See the module docs.
pub struct Allocator {
    state: UnsafeCell<State>,
}

struct State {
    free: [*mut u8; CLASSES],
    bump: *mut u8,
    end: *mut u8,
}

// SAFETY: guests run single-threaded (wasm32 without the atomics feature,
// the only configuration that installs it), so the state is never shared.
unsafe impl Sync for Allocator {}

impl Allocator {
    /// An empty allocator.
    pub const fn new() -> Self {
        Allocator {
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                bump: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a small layout, or `None` for one the standard allocator
/// serves.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(8);
    if size > MAX_SMALL {
        return None;
    }
    Some((usize::BITS - (size - 1).leading_zeros()) as usize - 3)
}

unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: forwarded as received.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`); no reference escapes.
        let s = unsafe { &mut *self.state.get() };
        let head = s.free[c];
        if !head.is_null() {
            // SAFETY: a free block holds the next pointer in its first bytes.
            s.free[c] = unsafe { *(head as *mut *mut u8) };
            return head;
        }
        let size = 8usize << c;
        // Blocks of a class are aligned to their size: chunks are aligned to
        // 4 KiB and every block carved from the bump pointer is rounded up.
        let start = (s.bump as usize).next_multiple_of(size) as *mut u8;
        if s.bump.is_null() || (start as usize) + size > s.end as usize {
            // SAFETY: a valid non-zero layout.
            let chunk =
                unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_SMALL)) };
            if chunk.is_null() {
                return chunk;
            }
            s.bump = chunk;
            // SAFETY: within the chunk just allocated.
            s.end = unsafe { chunk.add(CHUNK) };
            s.bump = unsafe { chunk.add(size) };
            return chunk;
        }
        // SAFETY: `start + size <= end`, inside the current chunk.
        s.bump = unsafe { start.add(size) };
        start
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: it came from `System.alloc` with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        };
        // SAFETY: single-threaded; the block is at least 8 bytes, aligned to 8.
        let s = unsafe { &mut *self.state.get() };
        unsafe { *(ptr as *mut *mut u8) = s.free[c] };
        s.free[c] = ptr;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for the new size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // SAFETY: both large: it came from `System` with `layout`.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                // SAFETY: a fresh block, then a copy of the smaller size.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_powers_of_two_from_8_to_4096() {
        let l = |s, a| Layout::from_size_align(s, a).unwrap();
        assert_eq!(class(l(1, 1)), Some(0));
        assert_eq!(class(l(8, 8)), Some(0));
        assert_eq!(class(l(9, 1)), Some(1));
        assert_eq!(class(l(100, 1)), Some(4)); // 128
        assert_eq!(class(l(4096, 1)), Some(9));
        assert_eq!(class(l(4097, 1)), None);
        assert_eq!(class(l(8, 64)), Some(3)); // aligned to 64: the 64 class
    }

    #[test]
    fn blocks_are_reused_aligned_and_distinct() {
        let a = Allocator::new();
        unsafe {
            let l = Layout::from_size_align(100, 8).unwrap();
            let p1 = a.alloc(l);
            let p2 = a.alloc(l);
            assert_ne!(p1, p2);
            assert_eq!(p1 as usize % 128, 0);
            ptr::write_bytes(p1, 0xab, 100);
            a.dealloc(p1, l);
            assert_eq!(a.alloc(l), p1);
            let grown = a.realloc(p2, l, 5000);
            assert!(!grown.is_null());
            a.dealloc(grown, Layout::from_size_align(5000, 8).unwrap());
        }
    }
}
