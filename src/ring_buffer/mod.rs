//! A bounded single-producer/single-consumer ring of fixed-size packet
//! slots: the hand-off from the io thread, which `recvmmsg`s straight into
//! slots, to the stage that consumes them. No copy, no allocation after
//! construction, no lock on the data path.
//!
//! # Promises
//! - Capacity is a power of two fixed at construction; the memory (slot
//!   buffers and metadata) is allocated once.
//! - The producer borrows a batch of *contiguous* free slots
//!   ([`Producer::write_batch`]) that a `recvmmsg` can fill in place, then
//!   commits how many it filled; the consumer borrows a batch of filled slots
//!   ([`Consumer::read_batch`]) and releases them. Items arrive once, in
//!   order.
//! - An idle consumer costs no CPU: [`Consumer::wait`] spins briefly, then
//!   parks; the producer unparks it only when it is parked.
//!
//! # Memory ordering (the argument)
//! `tail` counts slots ever committed, `head` slots ever released; both only
//! grow (wrapping). Slot `i` lives at `i & mask`.
//! - The producer writes a slot, then stores `tail` with **Release**; the
//!   consumer loads `tail` with **Acquire** before reading slots below it. So
//!   every write to a slot happens-before the consumer's reads of it.
//! - The consumer reads a slot, then stores `head` with **Release**; the
//!   producer loads `head` with **Acquire** before reusing slots below
//!   `head + capacity`. So the consumer's reads happen-before the reuse.
//! - Parking needs care. If the consumer stored "I am parked" and then read
//!   `tail` while the producer stored `tail` and then read the flag, both
//!   reads could miss the other side's store (store buffering) and the
//!   wake-up would be lost, unless a SeqCst fence stood between each store
//!   and load. We avoid the question: the parked flag is the top bit of
//!   `tail` itself. The consumer sets it with a `fetch_or` that also returns
//!   the current count; the producer publishes with a read-modify-write that
//!   writes its new count and clears the bit, and unparks the consumer if
//!   the bit was set. Read-modify-writes of one location are totally
//!   ordered: either the consumer's `fetch_or` sees the new count (and does
//!   not park) or the producer's update sees the bit (and wakes it). loom
//!   checks this; it treats SeqCst fences as AcqRel, so it could not check a
//!   fence version. `std::thread::park` keeps an unpark that arrives before
//!   the park. Counts are therefore kept modulo 2^63.
//! - Each side caches the other's index and reloads it only when the cached
//!   value says "full" (producer) or "empty" (consumer), so the shared cache
//!   lines move only when they must; `head` and `tail` live on separate
//!   cache lines.
//!
//! # What it does not do
//! It knows nothing of sockets or packets' contents: [`SlotMeta`] carries raw
//! bytes of a socket address for the io layer to interpret.

#![allow(unsafe_code)]

mod sync;

use std::ptr::NonNull;
use std::time::Duration;

use sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering, Thread};

/// Top bit of `tail`: the consumer is parked (or about to park).
const PARKED: usize = 1 << (usize::BITS - 1);
/// The bits of `head` and `tail` that count slots (counts wrap at 2^63).
const COUNT: usize = PARKED - 1;

/// `a - b` for counts modulo 2^63.
#[inline]
fn distance(a: usize, b: usize) -> usize {
    a.wrapping_sub(b) & COUNT
}

/// Bytes of raw socket-address storage in a slot (a `sockaddr_in6` is 28).
pub const SLOT_ADDR_LEN: usize = 32;
/// Spins of [`Consumer::wait`] before it parks, by default.
pub const DEFAULT_SPIN_LIMIT: u32 = 256;

/// Metadata of one slot, filled by the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct SlotMeta {
    /// Bytes of data in the slot's buffer.
    pub len: u32,
    /// Producer-defined flags (e.g. "truncated").
    pub flags: u32,
    /// Receive timestamp, ns of a monotonic clock.
    pub recv_ns: u64,
    /// Raw socket address of the sender, `addr_len` bytes used.
    pub addr: [u8; SLOT_ADDR_LEN],
    /// Bytes of `addr` in use.
    pub addr_len: u32,
    /// Producer-defined tag (e.g. which socket).
    pub tag: u32,
}

impl SlotMeta {
    /// All zero: no data, no address.
    pub const EMPTY: SlotMeta = SlotMeta {
        len: 0,
        flags: 0,
        recv_ns: 0,
        addr: [0; SLOT_ADDR_LEN],
        addr_len: 0,
        tag: 0,
    };
}

#[repr(align(128))]
struct Padded<T>(T);

struct Inner {
    /// Slots ever released by the consumer.
    head: Padded<AtomicUsize>,
    /// Slots ever committed by the producer, with [`PARKED`] as its top bit.
    tail: Padded<AtomicUsize>,
    /// The producer is gone: no more items will come.
    closed: AtomicBool,
    /// The consumer's thread, registered when it first waits.
    consumer: Mutex<Option<Thread>>,
    mask: usize,
    slot_size: usize,
    /// Bytes from one slot to the next: metadata then buffer, rounded up to
    /// a cache line, so a small datagram and its metadata share one line
    /// and no two slots share a line.
    stride: usize,
    /// `capacity * stride` bytes, aligned to a cache line.
    slots: NonNull<u8>,
}

/// Alignment (and stride granularity) of slots: a cache line.
const SLOT_ALIGN: usize = 64;
const _: () = assert!(align_of::<SlotMeta>() <= SLOT_ALIGN);

fn slots_layout(capacity: usize, stride: usize) -> std::alloc::Layout {
    // Both factors are bounded by `channel`'s checks (2^20 slots of at most
    // 1 MiB + 64 bytes), so the size fits and the alignment is a power of two.
    std::alloc::Layout::from_size_align(capacity * stride, SLOT_ALIGN).expect("bounded ring layout")
}

// SAFETY: `Inner` owns its allocation. Access to slot memory is
// partitioned between the one producer and the one consumer by the
// head/tail protocol described in the module docs; everything else is
// atomics or a mutex.
unsafe impl Send for Inner {}
// SAFETY: as above: shared references only reach slot memory through the
// protocol, which never lets both sides touch the same slot at once.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        let layout = slots_layout(self.mask + 1, self.stride);
        // SAFETY: `slots` came from `alloc_zeroed` with this very layout in
        // `channel` and is freed only here, once.
        unsafe { std::alloc::dealloc(self.slots.as_ptr(), layout) }
    }
}

impl Inner {
    #[inline]
    fn slot_ptrs(&self, index: usize) -> (*mut u8, *mut SlotMeta) {
        let i = index & self.mask;
        // SAFETY: `i <= mask`, so the slot's `stride` bytes lie inside the
        // `capacity * stride` allocation; the metadata sits at the slot's
        // start (aligned: slots are 64-aligned, stride a multiple of 64) and
        // the buffer right after it, `slot_size` bytes, within the stride.
        unsafe {
            let base = self.slots.as_ptr().add(i * self.stride);
            (base.add(size_of::<SlotMeta>()), base.cast::<SlotMeta>())
        }
    }
}

/// Creates a ring of `capacity` slots (a power of two, 2 ..= 2^20) of
/// `slot_size` bytes each (1 ..= 1 MiB).
pub fn channel(capacity: usize, slot_size: usize) -> (Producer, Consumer) {
    assert!(
        capacity.is_power_of_two() && (2..=1 << 20).contains(&capacity),
        "ring capacity {capacity} must be a power of two from 2 to 2^20"
    );
    assert!(
        (1..=1 << 20).contains(&slot_size),
        "slot size {slot_size} out of range"
    );
    let stride = (size_of::<SlotMeta>() + slot_size).next_multiple_of(SLOT_ALIGN);
    let layout = slots_layout(capacity, stride);
    // SAFETY: the layout has a non-zero size (capacity >= 2, stride >= 64).
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    let Some(slots) = NonNull::new(raw) else {
        std::alloc::handle_alloc_error(layout)
    };
    // All-zero bytes are a valid SlotMeta (integers and a byte array), so the
    // zeroed allocation already holds valid metadata in every slot.
    let inner = Arc::new(Inner {
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        closed: AtomicBool::new(false),
        consumer: Mutex::new(None),
        mask: capacity - 1,
        slot_size,
        stride,
        slots,
    });
    let producer = Producer {
        inner: inner.clone(),
        tail: 0,
        cached_head: 0,
    };
    let consumer = Consumer {
        inner,
        head: 0,
        cached_tail: 0,
        spin_limit: DEFAULT_SPIN_LIMIT,
    };
    (producer, consumer)
}

/// The writing end. Not `Clone`: there is one producer.
pub struct Producer {
    inner: Arc<Inner>,
    /// Our copy of `tail` (we are its only writer).
    tail: usize,
    /// Last `head` we loaded.
    cached_head: usize,
}

impl Producer {
    /// Slots in the ring.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.inner.mask + 1
    }

    /// Bytes per slot.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.inner.slot_size
    }

    /// Free slots now.
    pub fn free_count(&mut self) -> usize {
        self.free_at_least(usize::MAX)
    }

    /// Free slots as cached, reloading the consumer's index only when the
    /// cache shows fewer than `want`.
    #[inline]
    fn free_at_least(&mut self, want: usize) -> usize {
        let cap = self.capacity();
        let cached = cap - distance(self.tail, self.cached_head);
        if cached >= want {
            return cached;
        }
        self.cached_head = self.inner.head.0.load(Ordering::Acquire);
        cap - distance(self.tail, self.cached_head)
    }

    /// Borrows up to `max` contiguous free slots (fewer at the wrap point or
    /// when the ring is nearly full; possibly none).
    #[inline]
    pub fn write_batch(&mut self, max: usize) -> WriteBatch<'_> {
        let free = self.free_at_least(max);
        let to_wrap = self.capacity() - (self.tail & self.inner.mask);
        let len = max.min(free).min(to_wrap);
        WriteBatch {
            producer: self,
            len,
        }
    }

    /// Copies one item in (for callers that do not receive in place).
    /// Returns false when the ring is full.
    pub fn push(&mut self, data: &[u8], meta: &SlotMeta) -> bool {
        let mut batch = self.write_batch(1);
        if batch.is_empty() {
            return false;
        }
        let (buf, m) = batch.slot(0);
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        *m = SlotMeta {
            len: n as u32,
            ..*meta
        };
        batch.commit(1);
        true
    }

    #[inline]
    fn publish(&mut self, n: usize) {
        self.tail = self.tail.wrapping_add(n) & COUNT;
        // Write our count and clear the parked bit in one read-modify-write
        // (module docs: this is what makes the wake-up reliable).
        let prev = self.inner.tail.0.swap(self.tail, Ordering::AcqRel);
        if prev & PARKED != 0 {
            let thread = self
                .inner
                .consumer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(t) = thread {
                t.unpark();
            }
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        // Wake a parked consumer so that it sees the end.
        self.publish(0);
    }
}

/// Free slots lent to the producer. Dropping it commits nothing.
pub struct WriteBatch<'a> {
    producer: &'a mut Producer,
    len: usize,
}

impl WriteBatch<'_> {
    /// Slots in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No slots (the ring is full).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot `i`'s buffer (`slot_size` bytes) and metadata.
    #[inline]
    pub fn slot(&mut self, i: usize) -> (&mut [u8], &mut SlotMeta) {
        assert!(i < self.len, "slot {i} outside a batch of {}", self.len);
        let (buf, meta) = self
            .producer
            .inner
            .slot_ptrs(self.producer.tail.wrapping_add(i));
        // SAFETY: slots in [tail, head + capacity) belong to the producer
        // alone (the consumer reads only below `tail`), `i < len` keeps us in
        // that range, and `&mut self` makes this the only live borrow.
        unsafe {
            (
                std::slice::from_raw_parts_mut(buf, self.producer.inner.slot_size),
                &mut *meta,
            )
        }
    }

    /// Raw pointers to slot `i`'s buffer (`slot_size` bytes) and metadata,
    /// for a `recvmmsg` that fills many slots at once. They stay valid, and
    /// may be written, until this batch is committed or dropped.
    #[inline]
    pub fn slot_ptrs(&mut self, i: usize) -> (*mut u8, *mut SlotMeta) {
        assert!(i < self.len, "slot {i} outside a batch of {}", self.len);
        self.producer
            .inner
            .slot_ptrs(self.producer.tail.wrapping_add(i))
    }

    /// Hands the first `n` slots to the consumer.
    #[inline]
    pub fn commit(self, n: usize) {
        assert!(
            n <= self.len,
            "commit of {n} slots from a batch of {}",
            self.len
        );
        if n > 0 {
            self.producer.publish(n);
        }
    }
}

/// The reading end. Not `Clone`: there is one consumer.
pub struct Consumer {
    inner: Arc<Inner>,
    /// Our copy of `head` (we are its only writer).
    head: usize,
    /// Last `tail` we loaded.
    cached_tail: usize,
    spin_limit: u32,
}

impl Consumer {
    /// Sets how many times [`Consumer::wait`] polls before parking.
    pub fn set_spin_limit(&mut self, spins: u32) {
        self.spin_limit = spins;
    }

    /// Filled slots now.
    pub fn ready_count(&mut self) -> usize {
        self.ready_at_least(usize::MAX)
    }

    /// Filled slots as cached, reloading the producer's index only when the
    /// cache shows fewer than `want`.
    #[inline]
    fn ready_at_least(&mut self, want: usize) -> usize {
        let cached = distance(self.cached_tail, self.head);
        if cached >= want {
            return cached;
        }
        self.cached_tail = self.inner.tail.0.load(Ordering::Acquire) & COUNT;
        distance(self.cached_tail, self.head)
    }

    /// Has the producer gone, with nothing left to read?
    pub fn is_finished(&mut self) -> bool {
        self.inner.closed.load(Ordering::Acquire) && self.ready_count() == 0
    }

    /// Borrows up to `max` contiguous filled slots (possibly none).
    #[inline]
    pub fn read_batch(&mut self, max: usize) -> ReadBatch<'_> {
        let ready = self.ready_at_least(max);
        let to_wrap = self.inner.mask + 1 - (self.head & self.inner.mask);
        let len = max.min(ready).min(to_wrap);
        ReadBatch {
            consumer: self,
            len,
        }
    }

    /// Waits until an item is ready, the producer is gone, or `timeout`
    /// passes: spins up to the spin limit, then parks. Returns whether an
    /// item is ready.
    pub fn wait(&mut self, timeout: Option<Duration>) -> bool {
        for _ in 0..self.spin_limit {
            if self.ready_at_least(1) > 0 {
                return true;
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return self.ready_count() > 0;
            }
            std::hint::spin_loop();
        }
        {
            let mut t = self
                .inner
                .consumer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if t.is_none() {
                *t = Some(sync::current());
            }
        }
        // Raise the parked bit and read the count in one step.
        self.cached_tail = self.inner.tail.0.fetch_or(PARKED, Ordering::AcqRel) & COUNT;
        if self.cached_tail == self.head && !self.inner.closed.load(Ordering::Acquire) {
            match timeout {
                Some(d) => sync::park_timeout(d),
                None => sync::park(),
            }
        }
        // Clear the bit if the producer has not (an item seen without
        // parking, a timeout, a spurious wake-up). An unpark the producer
        // sends meanwhile only makes a later park return early.
        self.cached_tail = self.inner.tail.0.fetch_and(COUNT, Ordering::AcqRel) & COUNT;
        self.ready_at_least(1) > 0
    }
}

/// Filled slots lent to the consumer. Dropping it releases nothing (the
/// same slots come back from the next `read_batch`).
pub struct ReadBatch<'a> {
    consumer: &'a mut Consumer,
    len: usize,
}

impl ReadBatch<'_> {
    /// Slots in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No slots.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot `i`'s data (its first `meta.len` bytes, at most the slot size)
    /// and metadata.
    #[inline]
    pub fn get(&self, i: usize) -> (&[u8], &SlotMeta) {
        assert!(i < self.len, "slot {i} outside a batch of {}", self.len);
        let (buf, meta) = self
            .consumer
            .inner
            .slot_ptrs(self.consumer.head.wrapping_add(i));
        // SAFETY: slots in [head, tail) belong to the consumer until it
        // releases them (the producer writes only at or above `tail` and
        // below `head + capacity`); the Acquire load of `tail` that counted
        // them ordered the producer's writes before these reads.
        unsafe {
            let meta = &*meta;
            let len = (meta.len as usize).min(self.consumer.inner.slot_size);
            (std::slice::from_raw_parts(buf, len), meta)
        }
    }

    /// Releases every slot of the batch back to the producer.
    #[inline]
    pub fn release(self) {
        let n = self.len;
        self.release_first(n);
    }

    /// Releases the first `n` slots of the batch.
    #[inline]
    pub fn release_first(self, n: usize) {
        assert!(
            n <= self.len,
            "release of {n} slots from a batch of {}",
            self.len
        );
        let c = self.consumer;
        c.head = c.head.wrapping_add(n) & COUNT;
        c.inner.head.0.store(c.head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
