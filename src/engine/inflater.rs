//! The inflater thread: classifies the FrameSets that declare a large
//! inflated size, off the log thread, so that one source's inflation (up
//! to 4 MiB, milliseconds of CPU) never stands between another source's
//! report and its ACK (rule 7: full inflation happens off the io thread;
//! issue 18: one source cannot delay another's ACK).
//!
//! Order per source is kept: while a source has a FrameSet at the
//! inflater, its later datagrams follow it there, and the log thread takes
//! the results in the order they were submitted. What the inflater holds
//! is bounded ([`IN_FLIGHT_MAX`] FrameSets); past it a large compressed
//! FrameSet is dropped uninflated and counted (its sender retransmits).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::classify::{Classified, Dropped, Opener, classify_with};
use crate::crypt::Keyring;

/// FrameSets declaring more inflated bytes than this go to the inflater
/// (inflating 16 KiB takes tens of microseconds; a real STARTUP's
/// netconfig is a few KiB).
pub(super) const INLINE_INFLATE_MAX: u32 = 16 * 1024;

/// FrameSets submitted and not yet taken back, at most: bounds the memory
/// the inflater holds (each result up to 4 MiB).
pub(super) const IN_FLIGHT_MAX: usize = 16;

/// A datagram to classify.
struct Job {
    data: Vec<u8>,
    peer: SocketAddr,
    time_ns: u64,
}

/// What classifying it found.
pub(super) struct Done {
    pub(super) peer: SocketAddr,
    pub(super) time_ns: u64,
    pub(super) result: Result<Classified<'static>, Dropped>,
    /// The datagram as received: what the log holds of a clear one (its
    /// inflated form is classified again when the record is read).
    pub(super) datagram: Vec<u8>,
}

/// Why a datagram was not submitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// [`IN_FLIGHT_MAX`] FrameSets wait already.
    Full,
    /// The inflater thread ended (it panicked).
    Gone,
}

/// The log thread's end of the inflater.
pub(super) struct Inflater {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    /// FrameSets at the inflater per source.
    pending: HashMap<SocketAddr, u32>,
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl Inflater {
    /// Starts the thread; `wake` (the log thread) is unparked after each
    /// result.
    pub(super) fn start(keyring: Option<Arc<Keyring>>, wake: Thread) -> std::io::Result<Inflater> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(IN_FLIGHT_MAX);
        let (tx, done) = crossbeam_channel::bounded::<Done>(IN_FLIGHT_MAX);
        let thread = thread::Builder::new()
            .name("cma-inflate".into())
            .spawn(move || {
                let opener = keyring.as_deref().map(|k| k as &dyn Opener);
                for job in rx {
                    let result = classify_with(&job.data, opener).map(Classified::into_owned);
                    let done = Done {
                        peer: job.peer,
                        time_ns: job.time_ns,
                        result,
                        datagram: job.data,
                    };
                    if tx.send(done).is_err() {
                        break;
                    }
                    wake.unpark();
                }
            })?;
        Ok(Inflater {
            jobs: Some(jobs),
            done,
            pending: HashMap::new(),
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// `peer` has FrameSets at the inflater: its next datagrams follow.
    /// (Asked for every datagram: no hashing while the inflater is idle.)
    pub(super) fn has_pending(&self, peer: &SocketAddr) -> bool {
        self.in_flight > 0 && self.pending.contains_key(peer)
    }

    /// Hands a datagram to the inflater.
    pub(super) fn submit(
        &mut self,
        data: &[u8],
        peer: SocketAddr,
        time_ns: u64,
    ) -> Result<(), Refused> {
        if self.in_flight >= IN_FLIGHT_MAX {
            return Err(Refused::Full);
        }
        let job = Job {
            data: data.to_vec(),
            peer,
            time_ns,
        };
        let jobs = self.jobs.as_ref().ok_or(Refused::Gone)?;
        match jobs.try_send(job) {
            Ok(()) => {
                self.in_flight += 1;
                *self.pending.entry(peer).or_default() += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Gone),
        }
    }

    /// The next result, in the order submitted.
    pub(super) fn next_done(&mut self) -> Option<Done> {
        let d = self.done.try_recv().ok()?;
        self.in_flight -= 1;
        if let Some(n) = self.pending.get_mut(&d.peer) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&d.peer);
            }
        }
        Some(d)
    }

    /// FrameSets submitted and not yet taken back, while the thread runs
    /// (0 once it ended: nothing more will come back).
    pub(super) fn in_flight(&self) -> usize {
        match &self.thread {
            Some(t) if !t.is_finished() => self.in_flight,
            _ => self.done.len(),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // Closing the queue ends the thread; a result it still sends finds
        // the receiver gone and it stops.
        self.jobs = None;
        while self.done.try_recv().is_ok() {}
        drop(std::mem::replace(
            &mut self.done,
            crossbeam_channel::never(),
        ));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{EncodeOptions, FrameSetType, Message, ReqId, encode};

    fn compressed_report(request: u64) -> Vec<u8> {
        let json = format!("{{\"data\":\"{}\"}}", "x".repeat(40_000));
        let msg = Message::JsDiscovery {
            wallclock_us: None,
            json: &json,
        };
        let opts = EncodeOptions {
            compress_above: Some(0),
            ..EncodeOptions::default()
        };
        let mut out = Vec::new();
        let reqid = ReqId {
            session: 7,
            request,
            queue: 0,
        };
        encode(&msg, Some(reqid), &opts, &mut out).expect("encode");
        out
    }

    #[test]
    fn results_come_back_in_order_per_source_and_the_queue_is_bounded() {
        let mut inf = Inflater::start(None, thread::current()).expect("start");
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
        for i in 0..IN_FLIGHT_MAX as u64 {
            let peer = if i % 2 == 0 { a } else { b };
            inf.submit(&compressed_report(i + 1), peer, i)
                .expect("room");
        }
        assert!(inf.has_pending(&a) && inf.has_pending(&b));
        assert_eq!(
            inf.submit(&compressed_report(99), a, 99),
            Err(Refused::Full)
        );
        let mut got = Vec::new();
        while got.len() < IN_FLIGHT_MAX {
            match inf.next_done() {
                Some(d) => got.push(d),
                None => thread::park(),
            }
        }
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.time_ns, i as u64, "in the order submitted");
            let c = d.result.as_ref().expect("classified");
            assert!(c.compressed);
            assert_eq!(c.fstype, FrameSetType::JsDiscovery.to_wire());
            assert_eq!(c.reqid.map(|r| r.request), Some(i as u64 + 1));
        }
        assert!(!inf.has_pending(&a) && !inf.has_pending(&b));
        assert_eq!(inf.in_flight(), 0);
    }
}
