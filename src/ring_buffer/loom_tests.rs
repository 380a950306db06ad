//! loom model checks of the index and parking protocol: every interleaving
//! of one producer and one consumer on a two-slot ring.
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --lib ring_buffer`.

use super::*;

#[test]
fn loom_items_arrive_once_in_order_and_no_wakeup_is_lost() {
    loom::model(|| {
        let (mut p, mut c) = channel(2, 1);
        c.set_spin_limit(0);
        loom::thread::spawn(move || {
            let mut sent = 0u8;
            while sent < 3 {
                if p.push(
                    &[sent],
                    &SlotMeta {
                        len: 1,
                        ..SlotMeta::EMPTY
                    },
                ) {
                    sent += 1;
                } else {
                    loom::thread::yield_now();
                }
            }
        });
        let mut got = 0u8;
        while got < 3 {
            // A lost wake-up would leave this parked forever: loom reports
            // the deadlock.
            if !c.wait(None) {
                assert!(!c.is_finished(), "producer gone after {got} items");
                continue;
            }
            let b = c.read_batch(2);
            for i in 0..b.len() {
                assert_eq!(b.get(i).0, &[got]);
                got += 1;
            }
            b.release();
        }
    });
}
