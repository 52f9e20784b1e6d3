//! A global allocator that backs large allocations with transparent huge
//! pages.
//!
//! A build's indexes are a few large arrays (times, positions, prefix sums,
//! range structures), each written once right after it is allocated. With
//! 4 KiB pages every page of them is a fault in which the kernel maps and
//! zeroes it: on the second rich benchmark spec (4.4 GB of indexes) those
//! faults were a fifth of the build's CPU. A mapping advised
//! `MADV_HUGEPAGE` faults once per 2 MiB instead (`bench/RICH2.md` has the
//! measurement). Linux's default (`transparent_hugepage/enabled` =
//! `madvise`) gives huge pages only to mappings that ask for them.
//!
//! Allocations of at least [`LARGE`] bytes (glibc maps those on their own
//! anyway) become mappings of their own, advised for huge pages, moved or
//! grown by `mremap` without copying, and unmapped when freed; every
//! other allocation goes to the system allocator. On other systems
//! everything goes to the system allocator.
//!
//! The library never installs it: a program opts in, as the `leakless`
//! binaries and the Python extension do:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: leakless::alloc::HugePages = leakless::alloc::HugePages;
//! # fn main() { let _big = vec![0u8; 64 << 20]; }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of this size or more are huge-page mappings of their own:
/// glibc's largest threshold for mapping an allocation on its own
/// (`DEFAULT_MMAP_THRESHOLD_MAX` on 64-bit), so that no allocation the
/// system allocator would serve from its reused heap pays a fresh fault.
pub const LARGE: usize = 32 << 20;

/// The global allocator (see the module's documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct HugePages;

#[cfg(target_os = "linux")]
mod mapped {
    use std::alloc::Layout;
    use std::ptr::null_mut;

    /// Whether an allocation of `layout` is a mapping of its own (a
    /// mapping is aligned to a 4 KiB page; larger alignments, which no
    /// type of ours asks for, stay with the system allocator).
    pub fn is_mapped(layout: &Layout) -> bool {
        layout.size() >= super::LARGE && layout.align() <= 4096
    }

    /// A fresh mapping of `size` bytes (zeros), advised for huge pages.
    pub unsafe fn map(size: usize) -> *mut u8 {
        // SAFETY: an anonymous private mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return null_mut();
        }
        // Advice only: refused (a kernel without transparent huge pages),
        // the mapping keeps 4 KiB pages.
        // SAFETY: `p..p + size` is the mapping just made.
        unsafe { libc::madvise(p, size, libc::MADV_HUGEPAGE) };
        p.cast()
    }

    /// Unmaps what [`map`] or [`remap`] returned.
    pub unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: the caller passes a mapping of ours and its size.
        unsafe { libc::munmap(ptr.cast(), size) };
    }

    /// Grows or shrinks a mapping of ours, moving it when it must (the
    /// pages move, nothing is copied; the advice moves with them).
    pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: the caller passes a mapping of ours and its size.
        let p = unsafe { libc::mremap(ptr.cast(), old, new, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            return null_mut();
        }
        p.cast()
    }
}

#[cfg(target_os = "linux")]
// SAFETY: every pointer is either the system allocator's, for layouts it
// served, or a mapping of ours, for layouts `is_mapped` chooses: the same
// layout (size and alignment) that allocated a block frees it, so the two
// never meet.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match mapped::is_mapped(&layout) {
            // SAFETY: a fresh mapping.
            true => unsafe { mapped::map(layout.size()) },
            // SAFETY: forwarded as received.
            false => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match mapped::is_mapped(&layout) {
            // SAFETY: a fresh anonymous mapping reads as zeros.
            true => unsafe { mapped::map(layout.size()) },
            // SAFETY: forwarded as received.
            false => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match mapped::is_mapped(&layout) {
            // SAFETY: `alloc` mapped it with this size.
            true => unsafe { mapped::unmap(ptr, layout.size()) },
            // SAFETY: `alloc` had the system allocator serve it.
            false => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract: `new_size`, rounded
        // up to the alignment, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped::is_mapped(&layout), mapped::is_mapped(&new)) {
            // SAFETY: forwarded as received.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            // SAFETY: a mapping of ours, of `layout.size()` bytes.
            (true, true) => unsafe { mapped::remap(ptr, layout.size(), new_size) },
            // Across the threshold: a new block of the other kind.
            _ => {
                // SAFETY: `new` is a valid layout of a non-zero size.
                let p = unsafe { self.alloc(new) };
                if !p.is_null() {
                    // SAFETY: both blocks hold at least the bytes copied and
                    // do not overlap; the old one is freed with its layout.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                p
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
// SAFETY: every call is the system allocator's.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Each kind of block, and every move between them, keeps its bytes
    /// and frees with its layout.
    #[test]
    fn blocks_keep_their_bytes_across_the_threshold() {
        let a = HugePages;
        let small = Layout::from_size_align(1 << 20, 64).unwrap();
        unsafe {
            // Small, grown past the threshold, grown again, shrunk back.
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..small.size() {
                *p.add(i) = (i % 251) as u8;
            }
            let big = LARGE + 12_345;
            let q = a.realloc(p, small, big);
            assert!(!q.is_null());
            assert_eq!(q as usize % 4096, 0, "a mapping of its own");
            for i in (0..small.size()).step_by(997) {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            *q.add(big - 1) = 7;
            let bigger = 3 * LARGE;
            let r = a.realloc(q, Layout::from_size_align(big, 64).unwrap(), bigger);
            assert!(!r.is_null());
            assert_eq!(*r.add(big - 1), 7);
            assert_eq!(*r.add(4096), (4096 % 251) as u8);
            // The grown tail of a mapping reads as zeros (`realloc` leaves
            // it unspecified; fresh pages of an anonymous mapping are zeros:
            // this checks that `mremap` grew ours), and is writable.
            assert_eq!(*r.add(bigger - 1), 0);
            *r.add(bigger - 1) = 9;
            let s = a.realloc(r, Layout::from_size_align(bigger, 64).unwrap(), 4096);
            assert!(!s.is_null());
            assert_eq!(*s.add(4095), (4095 % 251) as u8);
            a.dealloc(s, Layout::from_size_align(4096, 64).unwrap());

            // Zeroed blocks of both kinds.
            for size in [4096, LARGE, 2 * LARGE + 1] {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let z = a.alloc_zeroed(layout);
                assert!(!z.is_null());
                assert!((0..size).step_by(4093).all(|i| *z.add(i) == 0));
                assert_eq!(*z.add(size - 1), 0);
                a.dealloc(z, layout);
            }

            // A large alignment stays with the system allocator: aligned,
            // and not one of our advised mappings.
            let aligned = Layout::from_size_align(LARGE, 1 << 16).unwrap();
            let w = a.alloc(aligned);
            assert!(!w.is_null());
            assert_eq!(w as usize % (1 << 16), 0);
            if huge_pages_offered() {
                let flags = vm_flags(w as usize).expect("the block's area in smaps");
                assert!(!flags.split_whitespace().any(|f| f == "hg"), "{flags}");
            }
            a.dealloc(w, aligned);
        }
    }

    /// A mapping of ours asks for huge pages: the kernel shows the advice
    /// as the `hg` flag of its area in `/proc/self/smaps`.
    #[test]
    fn large_blocks_are_advised_for_huge_pages() {
        if !huge_pages_offered() {
            // The advice is refused; the allocator works on (the test
            // above), and there is nothing to see here.
            return;
        }
        let a = HugePages;
        let layout = Layout::from_size_align(LARGE, 64).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            let flags = vm_flags(p as usize).expect("the block's area in smaps");
            a.dealloc(p, layout);
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
    }

    /// Whether the kernel gives huge pages to advised mappings (and shows
    /// the advice in `/proc/self/smaps`).
    fn huge_pages_offered() -> bool {
        let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        enabled.is_ok_and(|e| !e.contains("[never]"))
            && std::fs::read_to_string("/proc/self/smaps").is_ok_and(|s| s.contains("VmFlags:"))
    }

    /// The `VmFlags` line of the area of `/proc/self/smaps` holding `addr`.
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_owned());
            }
        }
        None
    }
}
