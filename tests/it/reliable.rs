//! The two halves of reliable delivery against each other over a simulated
//! network that loses, duplicates and reorders, in virtual time: every item
//! arrives exactly once, in order, and the sender's queue empties.

use cma::classify::ReqId;
use cma::reliable::{Inbound, Outbound, OutboundConfig, Verdict};
use proptest::prelude::*;

/// A packet in flight: (arrival time ms, what).
enum Packet {
    Data(ReqId, u32),
    Ack(ReqId),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn lossy_channel_delivers_everything_once_in_order(
        seed in any::<u64>(),
        items in 1u32..60,
        loss in 0u32..40,
        dup in 0u32..30,
        durable_delay_ms in 0u64..300,
    ) {
        let mut rng = seed | 1;
        let mut rand = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut tx = Outbound::new(77, 0, OutboundConfig::default());
        for i in 0..items {
            tx.push(i);
        }
        let mut rx = Inbound::default();
        let mut delivered: Vec<u32> = Vec::new();
        // Delivered but not yet durable: (durable at ms, reqid).
        let mut syncing: Vec<(u64, ReqId)> = Vec::new();
        let mut wire: Vec<(u64, Packet)> = Vec::new();
        let mut now = 0u64;
        while !tx.is_empty() {
            prop_assert!(now < 3_600_000, "not done after an hour of virtual time (seed {seed})");
            for t in tx.poll_transmit(now) {
                for _ in 0..(1 + u64::from(rand(100) < u64::from(dup))) {
                    if rand(100) >= u64::from(loss) {
                        wire.push((now + 1 + rand(400), Packet::Data(t.reqid, *t.item)));
                    }
                }
            }
            for (at, r) in std::mem::take(&mut syncing) {
                if at <= now {
                    if let Some(ack) = rx.on_durable(r) && rand(100) >= u64::from(loss) {
                        wire.push((now + 1 + rand(400), Packet::Ack(ack)));
                    }
                } else {
                    syncing.push((at, r));
                }
            }
            let (arrived, later): (Vec<_>, Vec<_>) = std::mem::take(&mut wire).into_iter().partition(|(at, _)| *at <= now);
            wire = later;
            for (_, p) in arrived {
                match p {
                    Packet::Data(r, item) => match rx.on_frameset(r) {
                        Verdict::Deliver => {
                            delivered.push(item);
                            syncing.push((now + durable_delay_ms, r));
                        }
                        Verdict::Duplicate { reack: Some(a) } => {
                            if rand(100) >= u64::from(loss) {
                                wire.push((now + 1 + rand(400), Packet::Ack(a)));
                            }
                        }
                        Verdict::Duplicate { reack: None } | Verdict::Gap { .. } => {}
                        Verdict::StaleSession | Verdict::UnknownSession => {
                            prop_assert!(false, "one session only")
                        }
                    },
                    Packet::Ack(a) => {
                        tx.on_ack(a);
                    }
                }
            }
            now += 50;
        }
        prop_assert_eq!(delivered, (0..items).collect::<Vec<_>>());
    }
}
