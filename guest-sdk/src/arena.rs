//! The plugin's allocator in the Wasm build: a bump arena in the module's
//! own zero-initialised memory, in front of the standard allocator.
//!
//! The host runs every decode in a fresh instance, so nothing allocated in
//! a call outlives it: freeing is not worth its cost. Rust's standard
//! allocator on `wasm32-unknown-unknown` takes every new chunk with
//! `memory.grow`, which in the host is a system call on the first call of
//! every instance and a page reset after it. The arena is a static array,
//! so it is part of the module's initial memory: a typical call never
//! grows memory, and an allocation is a pointer bump. Pages of the arena
//! that a call does not touch cost nothing (they are zero pages of the
//! instance's slot). What does not fit falls back to the standard
//! allocator.
//!
//! # Reuse across calls
//! The host may decode a batch of snapshots in one instance, one call after
//! another. The arena counts its live allocations and starts over from its
//! first byte whenever that count falls to zero, which is between two calls:
//! the call's arguments are freed when it returns and its result after the
//! host copied it out. So every `decode` of a batch starts on an empty
//! arena, and memory does not grow with the batch. An allocation that
//! outlives its call (a plugin's `static` cache) keeps the count above zero:
//! the arena then only stops starting over (it bumps on, then falls back to
//! the standard allocator), and never hands out memory still in use.
//!
//! On by default (the `arena` feature); a plugin that wants the standard
//! allocator alone turns the feature off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes of the arena: enough for a typical snapshot (the payload, the
/// decoded state and its encoding) several times over.
pub const ARENA_BYTES: usize = 2 << 20;

/// Every allocation of the arena starts at a multiple of this, whatever its
/// layout asks. Strings and byte buffers ask for 1, and UTF-8 validation
/// (`str::from_utf8`) checks plain ASCII a word pair at a time only from an
/// aligned address: aligned, a decoded string is checked eight bytes at a
/// time from its first byte instead of byte by byte up to the boundary.
const MIN_ALIGN: usize = 8;

#[repr(C, align(16))]
struct Memory([u8; ARENA_BYTES]);

/// The arena: its memory, how much of it is in use, and how many of its
/// allocations are live.
pub struct Arena {
    memory: UnsafeCell<Memory>,
    used: UnsafeCell<usize>,
    live: UnsafeCell<usize>,
}

// SAFETY: the Wasm build is single-threaded (no threads proposal in the
// plugin target); nothing else reaches the arena.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena.
    pub const fn new() -> Self {
        Self {
            memory: UnsafeCell::new(Memory([0; ARENA_BYTES])),
            used: UnsafeCell::new(0),
            live: UnsafeCell::new(0),
        }
    }

    /// Bytes in use from the arena's start (0 when nothing is live).
    pub fn used(&self) -> usize {
        // SAFETY: single-threaded (see the `Sync` impl).
        unsafe { *self.used.get() }
    }

    /// One allocation of the arena freed: the arena starts over when it was
    /// the last live one.
    fn released(&self) {
        // SAFETY: single-threaded.
        let live = unsafe { &mut *self.live.get() };
        *live = live.saturating_sub(1);
        if *live == 0 {
            // SAFETY: single-threaded.
            unsafe { *self.used.get() = 0 };
        }
    }

    fn base(&self) -> usize {
        self.memory.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let at = ptr as usize;
        at >= self.base() && at < self.base() + ARENA_BYTES
    }

    /// Bumps; `None` when the arena is full.
    unsafe fn bump(&self, layout: Layout) -> Option<*mut u8> {
        // SAFETY: single-threaded (see the `Sync` impl).
        let used = unsafe { &mut *self.used.get() };
        let start =
            (self.base() + *used).checked_next_multiple_of(layout.align().max(MIN_ALIGN))?;
        let end = start.checked_add(layout.size())?;
        if end > self.base() + ARENA_BYTES {
            return None;
        }
        *used = end - self.base();
        // SAFETY: single-threaded.
        unsafe { *self.live.get() += 1 };
        Some(start as *mut u8)
    }

    /// Whether `ptr..ptr+size` is the arena's last allocation.
    fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
        // SAFETY: single-threaded.
        let used = unsafe { *self.used.get() };
        ptr as usize + size == self.base() + used
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every pointer handed out is either a fresh, aligned, in-bounds
// region of the arena that no other allocation overlaps, or the system
// allocator's; each is freed by whoever handed it out.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        match unsafe { self.bump(layout) } {
            Some(ptr) => ptr,
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        match unsafe { self.bump(layout) } {
            // Arena memory is zero until first used, but may be handed out
            // again after a `dealloc` of the last allocation: zero it.
            Some(ptr) => {
                unsafe { ptr.write_bytes(0, layout.size()) };
                ptr
            }
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            // Only the last allocation gives its room back.
            if self.is_last(ptr, layout.size()) {
                // SAFETY: single-threaded.
                unsafe { *self.used.get() = ptr as usize - self.base() };
            }
            self.released();
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(ptr) {
            // The last allocation grows or shrinks in place when it fits.
            if self.is_last(ptr, layout.size())
                && ptr as usize + new_size <= self.base() + ARENA_BYTES
            {
                // SAFETY: single-threaded.
                unsafe { *self.used.get() = ptr as usize + new_size - self.base() };
                return ptr;
            }
            if new_size <= layout.size() {
                return ptr;
            }
            // SAFETY: `layout.align()` is a valid alignment; the new size
            // was valid for the caller.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            let new = unsafe { self.alloc(new_layout) };
            if !new.is_null() {
                unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
                // The old allocation is gone; the new one is live (counted
                // by `alloc` when it is the arena's).
                self.released();
            }
            new
        } else {
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_reuses_the_last_allocation_and_falls_back() {
        static ARENA: Arena = Arena::new();
        let arena = &ARENA;
        unsafe {
            let a = arena.alloc(Layout::from_size_align(10, 1).unwrap());
            let b = arena.alloc(Layout::from_size_align(8, 8).unwrap());
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 10);
            // The last allocation grows in place.
            let b2 = arena.realloc(b, Layout::from_size_align(8, 8).unwrap(), 64);
            assert_eq!(b2, b);
            // An earlier one moves, keeping its bytes.
            a.write_bytes(7, 10);
            let a2 = arena.realloc(a, Layout::from_size_align(10, 1).unwrap(), 20);
            assert_ne!(a2, a);
            assert_eq!(*a2.add(9), 7);
            // Freeing the last allocation gives its room back.
            let c = arena.alloc(Layout::from_size_align(16, 1).unwrap());
            arena.dealloc(c, Layout::from_size_align(16, 1).unwrap());
            let d = arena.alloc_zeroed(Layout::from_size_align(16, 1).unwrap());
            assert_eq!(c, d);
            assert!((0..16).all(|i| *d.add(i) == 0));
            // Too big for what is left: the system allocator, zeroed when
            // asked.
            let big = Layout::from_size_align(ARENA_BYTES, 1).unwrap();
            let e = arena.alloc(big);
            assert!(!e.is_null() && !arena.contains(e));
            arena.dealloc(e, big);
            let z = arena.alloc_zeroed(big);
            assert!(!z.is_null() && !arena.contains(z));
            assert!((0..ARENA_BYTES).step_by(4096).all(|i| *z.add(i) == 0));
            arena.dealloc(z, big);
        }
    }

    #[test]
    fn starts_over_when_nothing_is_live_and_never_while_something_is() {
        static ARENA: Arena = Arena::new();
        let arena = &ARENA;
        let small = Layout::from_size_align(100, 8).unwrap();
        unsafe {
            // One call: its arguments, its work, its result; all freed.
            let args = arena.alloc(small);
            let work = arena.alloc(small);
            let result = arena.alloc(small);
            arena.dealloc(work, small);
            arena.dealloc(args, small);
            assert!(arena.used() > 0, "the result is still live");
            arena.dealloc(result, small);
            assert_eq!(arena.used(), 0, "nothing live: the next call starts over");
            // The next call gets the arena's first bytes again.
            let next = arena.alloc(small);
            assert_eq!(next, args);
            // Something that outlives its call keeps its bytes.
            let kept = arena.alloc(small);
            kept.write_bytes(9, 100);
            arena.dealloc(next, small);
            assert!(arena.used() > 0);
            let other = arena.alloc(small);
            assert_ne!(other, kept);
            other.write_bytes(1, 100);
            assert!(
                (0..100).all(|i| *kept.add(i) == 9),
                "never handed out twice"
            );
            // A moved reallocation counts once.
            let moved = arena.realloc(other, small, 4000);
            assert!(arena.contains(moved));
            arena.dealloc(moved, Layout::from_size_align(4000, 8).unwrap());
            arena.dealloc(kept, small);
            assert_eq!(arena.used(), 0);
        }
    }
}
