//! The buffers a build's output is read into, used again once the text in them has been
//! stored: a build printing fast fills one per read, and its text goes on in it (to the
//! log batch, then to the store), so without reuse every read of it faulted in fresh
//! memory (a fifth of the output reader's CPU, measured) and freed it on another thread.
//!
//! A buffer taken here has room for [`SIZE`] bytes; given back (its text dropped), it is
//! kept for the next read while builds are reading and fewer than [`KEEP`] are kept. When
//! the last build stops reading, the kept ones are freed (an idle server holds none).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The room of each buffer: a read and the unfinished line before it.
pub(crate) const SIZE: usize = crate::session::READ_ROOM;
/// At most this many are kept (10 MiB): a stored batch gives back its buffers at once.
const KEEP: usize = 32;

/// Buffers kept for reuse, and how many readers run.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    readers: AtomicUsize,
}

static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool {
            free: Mutex::new(Vec::new()),
            readers: AtomicUsize::new(0),
        }
    }

    fn free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Vec<u8> {
        let kept = self.free().pop();
        kept.unwrap_or_else(|| Vec::with_capacity(SIZE))
    }

    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() != SIZE || self.readers.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut free = self.free();
        if free.len() < KEEP {
            buf.clear();
            free.push(buf);
        }
    }

    fn start(&self) {
        self.readers.fetch_add(1, Ordering::AcqRel);
    }

    fn stop(&self) {
        if self.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let drained = std::mem::take(&mut *self.free());
            drop(drained);
        }
    }
}

/// A buffer with room for [`SIZE`] bytes, empty.
pub(crate) fn take() -> Vec<u8> {
    POOL.take()
}

/// Gives `buf` back: kept for a later read when it is one of these buffers, a reader runs
/// and there is room; freed otherwise.
pub(crate) fn give(buf: Vec<u8>) {
    POOL.give(buf)
}

/// Text handed on in one of these buffers (or in any other): a [`bytes::Bytes`] over it
/// gives the buffer back when the last of it is dropped.
pub(crate) struct Text(pub(crate) Vec<u8>);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// A reader of build output, while it runs (see the module's description).
pub(crate) struct Reader(());

impl Reader {
    pub(crate) fn start() -> Reader {
        POOL.start();
        Reader(())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        POOL.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_while_a_reader_runs_and_are_freed_after() {
        let pool = Pool::new();
        // No reader: nothing is kept.
        pool.give(pool.take());
        assert!(pool.free().is_empty());
        pool.start();
        let mut a = pool.take();
        a.extend_from_slice(b"some lines\n");
        let at = a.as_ptr();
        pool.give(a);
        let again = pool.take();
        assert_eq!(again.as_ptr(), at, "the same buffer, used again");
        assert!(again.is_empty() && again.capacity() == SIZE);
        // Not one of these buffers: not kept; and no more than KEEP.
        pool.give(Vec::with_capacity(10));
        assert!(pool.free().is_empty());
        for _ in 0..KEEP + 3 {
            pool.give(Vec::with_capacity(SIZE));
        }
        assert_eq!(pool.free().len(), KEEP);
        // The last reader gone: the kept ones are freed.
        pool.stop();
        assert!(pool.free().is_empty());
    }

    #[test]
    fn text_over_a_buffer_reads_as_it() {
        let t = bytes::Bytes::from_owner(Text(b"one\ntwo\n".to_vec()));
        assert_eq!(&t[..], b"one\ntwo\n");
    }
}
