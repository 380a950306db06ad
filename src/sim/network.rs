//! The simulated network and its faults: event scheduling, datagram
//! delay and loss, which paths are up, and when crashes, reboots,
//! shutdowns, partitions, pauses and path faults happen.

use super::*;

impl Sim {
    pub(super) fn at(&mut self, t: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, slot)));
    }

    pub(super) fn delay(&mut self) -> u64 {
        // Whole ms on the virtual clock; 0.1 .. max_delay_us.
        (100 + self.rng.below(self.cfg.max_delay_us.max(100))) / 1000
    }

    pub(super) fn path_ok(&self, from: u32, to: u32) -> bool {
        let (a, b) = (&self.agents[from as usize], &self.agents[to as usize]);
        let (pa, pb) = (
            self.partitioned[a.switch as usize],
            self.partitioned[b.switch as usize],
        );
        (if a.switch == b.switch {
            pa != 2
        } else {
            pa == 0 && pb == 0
        }) && !self.broken.contains(&(from, to))
    }

    pub(super) fn cma_ok(&self, a: u32) -> bool {
        self.partitioned[self.agents[a as usize].switch as usize] == 0
    }

    /// Draws the run's faults up front: one short block per fault kind.
    pub(super) fn schedule_faults(&mut self) {
        let f = self.cfg.faults.clone();
        let n = self.cfg.nodes as u64;
        if n < 4 {
            return;
        }
        let from = self.cfg.faults_from_ms();
        let span = 120_000;
        let mut used = vec![false; self.cfg.nodes];
        let mut used_sw = vec![false; self.partitioned.len()];
        let (lo, hi) = self.cfg.partition_ms;
        let (lo, hi) = (lo.max(1) as f64, hi.max(lo.max(1)) as f64);
        let pick = |rng: &mut Rng, used: &mut Vec<bool>, used_sw: &[bool], agents: &[Agent]| {
            for _ in 0..1000 {
                let i = rng.below(n) as usize;
                if !used[i] && !used_sw[agents[i].switch as usize] {
                    used[i] = true;
                    return Some(i as u32);
                }
            }
            None
        };
        // Partitions first, on switches with at least two agents, and only
        // when there is more than one switch.
        if self.partitioned.len() > 1 {
            for _ in 0..f.partition {
                let sw = self.rng.below(self.partitioned.len() as u64) as u32;
                let members = self.agents.iter().filter(|a| a.switch == sw).count();
                if used_sw[sw as usize] || members < 2 {
                    continue;
                }
                used_sw[sw as usize] = true;
                let t = from + self.rng.below(span);
                let u = self.rng.below(1 << 20) as f64 / f64::from(1u32 << 20);
                let len = (lo * (hi / lo).powf(u)) as u64;
                let kind = if self.rng.chance(self.cfg.switch_down) {
                    2
                } else {
                    1
                };
                self.partitions.push((sw, t, t + len));
                self.named_partitions.push(false);
                self.at(t, Ev::PartitionStart(sw, kind));
                self.at(t + len, Ev::PartitionEnd(sw));
                self.end = self.end.max(t + len + 150_000);
                self.report.faults += 1;
            }
        }
        for kind in 0..4 {
            let k = [f.crash, f.reboot, f.shutdown, f.link][kind];
            for _ in 0..k {
                let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                    continue;
                };
                let t = from + self.rng.below(span);
                self.report.faults += 1;
                match kind {
                    0 => {
                        self.fate[a as usize] = Some(Fate::Crashed(t));
                        self.at(t, Ev::Crash(a));
                    }
                    1 => {
                        self.fate[a as usize] = Some(Fate::Busy);
                        self.at(t, Ev::Crash(a));
                        let back = t + 5000 + self.rng.below(15_000);
                        self.at(back, Ev::Start(a));
                    }
                    2 => {
                        self.fate[a as usize] = Some(Fate::Leaving);
                        self.at(t, Ev::Shutdown(a));
                    }
                    _ => {
                        // The peer is chosen when the fault starts (from
                        // the agent's current peers).
                        let len = 40_000 + self.rng.below(20_000);
                        self.at(t, Ev::LinkStart(a, len as u32));
                    }
                }
            }
        }
        for _ in 0..f.wipe {
            let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                continue;
            };
            let t = from + self.rng.below(span);
            self.report.faults += 1;
            self.at(t, Ev::Wipe(a));
        }
        for _ in 0..f.pause {
            let Some(a) = pick(&mut self.rng, &mut used, &used_sw, &self.agents) else {
                continue;
            };
            let t = from + self.rng.below(span);
            let len = 45_000 + self.rng.below(15_000);
            self.report.faults += 1;
            self.fate[a as usize] = Some(Fate::Paused(t));
            self.at(t, Ev::Pause(a, len as u32));
        }
        if self.cfg.state_interval_ms > 0 {
            self.at(from, Ev::Audit);
        }
        debug_assert!(self.report.faults <= f.total());
    }
}
