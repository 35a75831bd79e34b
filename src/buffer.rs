//! Byte buffers that own memory only while they hold bytes.
//!
//! A [`Buffer`] is a queue of bytes: producers append at the back, the socket (or a parser)
//! consumes from the front. Two properties matter for an event loop with thousands of mostly
//! idle connections:
//!
//! * **Lazy allocation.** A new buffer owns no heap memory. It allocates on the first append.
//! * **Given back when empty.** When the last byte is consumed the allocation is released, so
//!   an idle connection costs only the size of the struct (invariant 9 in `docs/02-event-loop.md`).
//!
//! Consuming from the front only moves an offset, so a partial write of a large buffer is
//! O(1), not O(remaining). The live bytes are moved back to the start only when an append
//! needs room *and* the consumed prefix is at least as long as the live part: each move is
//! then paid for by bytes already consumed, so appends stay amortised O(1) per byte even when
//! a full buffer is drained and refilled in small steps. Otherwise the allocation grows.
//!
//! Watermarks are not the buffer's business: the connection compares [`Buffer::len`] with its
//! configured limits. The buffer never performs a system call.

/// A FIFO of bytes that holds heap memory only while it is non-empty.
#[derive(Debug, Default)]
pub struct Buffer {
    bytes: Vec<u8>,
    /// Offset of the first unconsumed byte in `bytes`.
    start: usize,
}

impl Buffer {
    /// An empty buffer. Does not allocate.
    pub const fn new() -> Buffer {
        Buffer {
            bytes: Vec::new(),
            start: 0,
        }
    }

    /// Number of unconsumed bytes.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Whether there are no unconsumed bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of heap memory currently owned (zero when empty after a [`Buffer::consume`]).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The unconsumed bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// The unconsumed bytes, to change in place (a fault that corrupts a reply).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..]
    }

    /// Keeps the first `len` unconsumed bytes and forgets the rest (a reply cut short).
    /// Releases the memory if nothing is left.
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(self.start + len);
        if self.start == self.bytes.len() {
            self.release();
        }
    }

    /// Appends `data` at the back.
    pub fn extend(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let needs_room = self.bytes.len() + data.len() > self.bytes.capacity();
        if needs_room && self.start > 0 && self.start >= self.len() {
            // The move costs at most `start` bytes, all consumed already.
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Drops the first `n` bytes (they were written, or parsed). Releases the memory once the
    /// buffer is empty.
    ///
    /// # Panics
    ///
    /// If `n` is larger than [`Buffer::len`].
    pub fn consume(&mut self, n: usize) {
        assert!(
            n <= self.len(),
            "consume({n}) of a {}-byte buffer",
            self.len()
        );
        self.start += n;
        if self.start == self.bytes.len() {
            self.release();
        }
    }

    /// Forgets every byte but keeps the allocation, for a scratch buffer that is reused at
    /// once (the loop's shared output scratch).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.start = 0;
    }

    /// Forgets every byte and returns the memory to the allocator.
    pub fn release(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Truncating keeps the oldest bytes, and gives the memory back when none are left.
    #[test]
    fn truncate_keeps_the_front() {
        let mut buf = Buffer::new();
        buf.extend(b"hello world");
        buf.consume(2);
        buf.truncate(3);
        assert_eq!(buf.as_slice(), b"llo");
        buf.as_mut_slice()[0] = b'L';
        assert_eq!(buf.as_slice(), b"Llo");
        buf.truncate(0);
        assert_eq!(buf.capacity(), 0);
    }

    /// A new buffer owns no heap memory.
    #[test]
    fn new_buffer_does_not_allocate() {
        let buf = Buffer::new();
        assert_eq!(buf.capacity(), 0);
        assert!(buf.is_empty());
    }

    /// Bytes come out in the order they went in, across partial consumes.
    #[test]
    fn fifo_order_across_partial_consumes() {
        let mut buf = Buffer::new();
        buf.extend(b"hello ");
        buf.extend(b"world");
        buf.consume(3);
        assert_eq!(buf.as_slice(), b"lo world");
        buf.extend(b"!");
        buf.consume(2);
        assert_eq!(buf.as_slice(), b" world!");
    }

    /// Consuming the last byte gives the allocation back.
    #[test]
    fn empty_buffer_releases_memory() {
        let mut buf = Buffer::new();
        buf.extend(&[7; 4096]);
        assert!(buf.capacity() >= 4096);
        buf.consume(4000);
        assert!(buf.capacity() >= 4096, "still holding 96 bytes");
        buf.consume(96);
        assert_eq!(buf.capacity(), 0);
    }

    /// A full buffer drained and refilled in small steps does not move its live bytes on
    /// every append (which would make each append O(pending)).
    #[test]
    fn refill_of_full_buffer_does_not_compact_each_time() {
        let mut buf = Buffer::new();
        buf.extend(&[0; 4096]);
        let cap = buf.capacity();
        buf.consume(16);
        buf.extend(&[1; 16]);
        // Grew instead of moving 4080 live bytes for a 16-byte append.
        assert!(buf.capacity() > cap);
        assert_eq!(buf.len(), 4096);
        assert_eq!(&buf.as_slice()[4080..], &[1; 16][..]);
    }

    /// Appending after a large consume reuses the consumed prefix instead of growing.
    #[test]
    fn compaction_avoids_growth() {
        let mut buf = Buffer::new();
        buf.extend(&[1; 1000]);
        let cap = buf.capacity();
        buf.consume(900);
        buf.extend(&[2; 800]);
        assert_eq!(buf.capacity(), cap);
        assert_eq!(buf.len(), 900);
        assert_eq!(&buf.as_slice()[..100], &[1; 100][..]);
        assert_eq!(&buf.as_slice()[100..], &[2; 800][..]);
    }

    /// `clear` keeps the allocation for reuse; `release` drops it.
    #[test]
    fn clear_keeps_and_release_drops_capacity() {
        let mut buf = Buffer::new();
        buf.extend(&[0; 64]);
        buf.clear();
        assert!(buf.is_empty());
        assert!(buf.capacity() >= 64);
        buf.release();
        assert_eq!(buf.capacity(), 0);
    }

    /// Over-consuming is a bug in the caller and panics loudly.
    #[test]
    #[should_panic(expected = "consume(5) of a 4-byte buffer")]
    fn over_consume_panics() {
        let mut buf = Buffer::new();
        buf.extend(b"abcd");
        buf.consume(5);
    }
}
