//! Unit tests on one thread, and a two-thread stress test (also run under
//! Miri, which checks every slot access for data races).

use super::*;

fn meta(tag: u32) -> SlotMeta {
    SlotMeta {
        tag,
        recv_ns: u64::from(tag) * 10,
        ..SlotMeta::EMPTY
    }
}

#[test]
fn push_and_read_in_order_with_wrap() {
    let (mut p, mut c) = channel(4, 16);
    assert_eq!(p.capacity(), 4);
    for round in 0..5u32 {
        for i in 0..3 {
            assert!(p.push(&[(round * 3 + i) as u8; 5], &meta(round * 3 + i)));
        }
        let mut seen = Vec::new();
        loop {
            let b = c.read_batch(8);
            if b.is_empty() {
                break;
            }
            for i in 0..b.len() {
                let (data, m) = b.get(i);
                assert_eq!(data.len(), 5);
                assert_eq!(data[0] as u32, m.tag);
                seen.push(m.tag);
            }
            b.release();
        }
        assert_eq!(seen, (round * 3..round * 3 + 3).collect::<Vec<_>>());
    }
}

#[test]
fn batches_stop_at_the_wrap_point_and_when_full() {
    let (mut p, mut c) = channel(8, 4);
    // Fill 6, read 6: both indices sit at 6.
    let b = p.write_batch(6);
    assert_eq!(b.len(), 6);
    b.commit(6);
    c.read_batch(6).release();
    // Only 2 slots remain before the wrap.
    let b = p.write_batch(8);
    assert_eq!(b.len(), 2);
    b.commit(2);
    let b = p.write_batch(8);
    assert_eq!(b.len(), 6);
    b.commit(6);
    // Full now.
    assert_eq!(p.free_count(), 0);
    assert!(p.write_batch(1).is_empty());
    assert!(!p.push(b"x", &meta(0)));
    // The consumer also sees the wrap: 2, then 6.
    assert_eq!(c.read_batch(100).len(), 2);
    c.read_batch(100).release();
    assert_eq!(c.read_batch(100).len(), 6);
}

#[test]
fn partial_commit_and_release() {
    let (mut p, mut c) = channel(4, 8);
    let mut b = p.write_batch(4);
    for i in 0..4 {
        let (buf, m) = b.slot(i);
        buf[0] = i as u8;
        *m = SlotMeta {
            len: 1,
            ..meta(i as u32)
        };
    }
    b.commit(2);
    assert_eq!(c.ready_count(), 2);
    let r = c.read_batch(4);
    assert_eq!(r.len(), 2);
    r.release_first(1);
    // The unreleased slot comes back.
    let r = c.read_batch(4);
    assert_eq!(r.get(0).1.tag, 1);
    assert_eq!(r.get(0).0, &[1]);
    // A batch that goes out of scope unreleased releases nothing.
    let _ = r.len();
    assert_eq!(c.read_batch(4).len(), 1);
    assert_eq!(p.free_count(), 3);
}

#[test]
fn wait_returns_when_producer_is_gone() {
    let (p, mut c) = channel(2, 1);
    c.set_spin_limit(0);
    drop(p);
    assert!(!c.wait(None));
    assert!(c.is_finished());
}

#[test]
fn slot_length_is_clamped_to_the_slot_size() {
    let (mut p, mut c) = channel(2, 4);
    let mut b = p.write_batch(1);
    *b.slot(0).1 = SlotMeta { len: 99, ..meta(0) };
    b.commit(1);
    assert_eq!(c.read_batch(1).get(0).0.len(), 4);
}

#[test]
#[should_panic(expected = "power of two")]
fn capacity_must_be_a_power_of_two() {
    let _ = channel(6, 8);
}

/// Every item arrives once and in order, with random batch sizes on both
/// sides and a consumer that parks when it runs dry.
#[test]
fn two_threads_stress() {
    let total: u32 = if cfg!(miri) { 300 } else { 2_000_000 };
    let (mut p, mut c) = channel(if cfg!(miri) { 8 } else { 1024 }, 8);
    c.set_spin_limit(if cfg!(miri) { 2 } else { 64 });
    let producer = std::thread::spawn(move || {
        let mut next = 0u32;
        let mut x = 0x2545_f491u32;
        while next < total {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let want = (x % 37 + 1) as usize;
            let mut b = p.write_batch(want);
            if b.is_empty() {
                std::thread::yield_now();
                continue;
            }
            let n = b.len().min((total - next) as usize);
            for i in 0..n {
                let (buf, m) = b.slot(i);
                buf[..4].copy_from_slice(&next.to_le_bytes());
                *m = SlotMeta {
                    len: 4,
                    ..meta(next)
                };
                next += 1;
            }
            b.commit(n);
        }
    });
    let mut want = 0u32;
    let mut x = 0x9e37_79b9u32;
    while want < total {
        if !c.wait(Some(Duration::from_secs(10))) {
            assert!(!c.is_finished(), "producer ended early at {want}");
            continue;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = c.read_batch((x % 41 + 1) as usize);
        for i in 0..b.len() {
            let (data, m) = b.get(i);
            assert_eq!(m.tag, want);
            assert_eq!(data, &want.to_le_bytes());
            want += 1;
        }
        b.release();
    }
    producer.join().unwrap();
    assert!(c.is_finished());
}
