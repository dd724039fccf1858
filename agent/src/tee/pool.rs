//! Page runs from a pool of *shared* memory, tracked in private memory.
//!
//! Memory shared with the host (virtio bounce buffers, guest-request and quote buffers) may be
//! rewritten by the host at any moment, so the allocator's bookkeeping must not live in it: a
//! free-list allocator keeps its list inside the free blocks, and a host editing that list would
//! steer the agent's own writes. This one keeps one bit per page in the agent's private memory
//! and never reads the pool's contents.

/// A pool of `64 * WORDS` pages: bit set = page in use.
#[derive(Clone, Debug)]
pub struct PagePool<const WORDS: usize> {
    used: [u64; WORDS],
    pages: usize,
}

impl<const WORDS: usize> PagePool<WORDS> {
    /// A pool of `pages` pages (at most `64 * WORDS`), all free.
    pub const fn new(pages: usize) -> Self {
        let pages = if pages < 64 * WORDS { pages } else { 64 * WORDS };
        PagePool { used: [0; WORDS], pages }
    }

    pub fn pages(&self) -> usize {
        self.pages
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, start: usize, count: usize, used: bool) {
        for p in start..start + count {
            if used {
                self.used[p / 64] |= 1 << (p % 64);
            } else {
                self.used[p / 64] &= !(1 << (p % 64));
            }
        }
    }

    /// The first run of `count` free pages (first fit), marked used: its first page's index.
    pub fn alloc(&mut self, count: usize) -> Option<usize> {
        if count == 0 || count > self.pages {
            return None;
        }
        let mut start = 0;
        while start + count <= self.pages {
            match (start..start + count).find(|&p| self.is_used(p)) {
                Some(used) => start = used + 1,
                None => {
                    self.set(start, count, true);
                    return Some(start);
                }
            }
        }
        None
    }

    /// Returns a run from [`alloc`](Self::alloc). A run that is not wholly in use (a double
    /// free, or a run the pool never gave out) is refused and changes nothing.
    pub fn free(&mut self, start: usize, count: usize) -> bool {
        let ok = count > 0 && start.checked_add(count).is_some_and(|end| end <= self.pages) && (start..start + count).all(|p| self.is_used(p));
        if ok {
            self.set(start, count, false);
        }
        ok
    }

    /// Pages in use.
    pub fn used(&self) -> usize {
        (0..self.pages).filter(|&p| self.is_used(p)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_runs_and_reuse() {
        let mut p = PagePool::<2>::new(100);
        assert_eq!(p.pages(), 100);
        assert_eq!(p.alloc(3), Some(0));
        assert_eq!(p.alloc(1), Some(3));
        assert_eq!(p.alloc(10), Some(4));
        assert!(p.free(0, 3));
        // A run of 4 does not fit in the 3-page hole: it goes after the last run.
        assert_eq!(p.alloc(4), Some(14));
        assert_eq!(p.alloc(2), Some(0));
        assert_eq!(p.alloc(1), Some(2));
        assert_eq!(p.used(), 3 + 1 + 10 + 4);
    }

    #[test]
    fn exhaustion_and_bounds() {
        let mut p = PagePool::<1>::new(64);
        assert_eq!(p.alloc(0), None);
        assert_eq!(p.alloc(65), None);
        assert_eq!(p.alloc(64), Some(0));
        assert_eq!(p.alloc(1), None);
        assert!(p.free(0, 64));
        // The pool is capped at its bitmap's size.
        assert_eq!(PagePool::<1>::new(1000).pages(), 64);
    }

    #[test]
    fn bad_frees_change_nothing() {
        let mut p = PagePool::<1>::new(16);
        assert_eq!(p.alloc(4), Some(0));
        assert!(!p.free(2, 4), "a run reaching past what was given out");
        assert!(!p.free(15, 2), "past the end");
        assert!(!p.free(usize::MAX, 2), "overflow");
        assert!(!p.free(0, 0));
        assert_eq!(p.used(), 4);
        assert!(p.free(0, 4));
        assert!(!p.free(0, 4), "double free");
        assert_eq!(p.used(), 0);
    }
}
