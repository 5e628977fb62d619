//! First stage: read both rings (lifecycle, then file and network) and hand on the decoded
//! events in kernel time order.
//!
//! The two rings are filled independently, so their events are merged by timestamp: an event is
//! released only once no earlier one can still arrive from either ring, that is once it is older
//! than the point up to which every ring has been read (`now` for a ring read to its end, less a
//! small margin for events still being written).

use std::{cmp::Reverse, collections::BinaryHeap};

use aya::maps::{MapData, RingBuf};

use crate::ebpf::decode::{self, Event};

/// Bytes read per ring per poll, so one busy ring cannot starve the other, and so the decoded
/// events waiting for correlation stay a few MiB of heap even in a storm of long paths.
const READ_BUDGET: usize = 1 << 20;
/// An event is stamped before it is written to its ring; allow this much for that.
const IN_FLIGHT_NS: u64 = 2_000_000;

struct Pending {
    ts: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.order) == (o.ts, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.order).cmp(&(o.ts, o.order))
    }
}

/// Merges events from several sources by kernel timestamp.
#[derive(Default)]
pub struct Merger {
    heap: BinaryHeap<Reverse<Pending>>,
    order: u64,
}

impl Merger {
    pub fn push(&mut self, event: Event) {
        self.order += 1;
        self.heap.push(Reverse(Pending { ts: event.header().ts_ns, order: self.order, event }));
    }

    /// Events at or before `cutoff`, oldest first.
    pub fn release(&mut self, cutoff: u64, out: &mut Vec<Event>) {
        while self.heap.peek().is_some_and(|p| p.0.ts <= cutoff) {
            if let Some(Reverse(p)) = self.heap.pop() {
                out.push(p.event);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

pub struct Reader {
    pub lifecycle: RingBuf<MapData>,
    pub events: RingBuf<MapData>,
    merger: Merger,
    pub decode_errors: u64,
    pub read: u64,
    /// After a replacement: events of the new rings before this were taken from the old ones.
    skip_before: u64,
}

pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Reader {
    pub fn new(lifecycle: RingBuf<MapData>, events: RingBuf<MapData>) -> Self {
        Self { lifecycle, events, merger: Merger::default(), decode_errors: 0, read: 0, skip_before: 0 }
    }

    /// Drain replaced programs' rings once: their events before `before_ns`, when every new
    /// program was attached; the new rings' events before it are skipped, so each event is
    /// handled once.
    pub fn drain_replaced(&mut self, rings: &mut [RingBuf<MapData>], before_ns: u64) {
        self.skip_before = before_ns;
        for ring in rings {
            while let Some(item) = ring.next() {
                if let Some(ev) = self.decode(&item) {
                    if ev.header().ts_ns < before_ns {
                        self.merger.push(ev);
                    }
                }
            }
        }
    }

    fn decode(&mut self, item: &[u8]) -> Option<Event> {
        self.read += 1;
        match decode::decode(item) {
            Ok(ev) => Some(ev),
            Err(e) => {
                self.decode_errors += 1;
                tracing::warn!(error = %e, "undecodable event skipped");
                None
            }
        }
    }

    /// Read everything the rings hold now, to be handled by the next polls, and return the
    /// processes whose fork is among it. A daemon starting after a crash seeds the others from
    /// `/proc`: these come through the ring, with their start.
    pub fn prefetch(&mut self) -> std::collections::HashSet<u32> {
        let mut forked = std::collections::HashSet::new();
        for which in [0, 1] {
            loop {
                let ring = if which == 0 { &mut self.lifecycle } else { &mut self.events };
                let Some(item) = ring.next() else { break };
                let ev = decode::decode(&item);
                drop(item);
                self.read += 1;
                match ev {
                    Ok(ev) => {
                        if ev.header().ts_ns < self.skip_before {
                            continue;
                        }
                        if let Event::Fork { child_tgid, thread: false, .. } = &ev {
                            forked.insert(*child_tgid);
                        }
                        self.merger.push(ev);
                    }
                    Err(e) => {
                        self.decode_errors += 1;
                        tracing::warn!(error = %e, "undecodable event skipped");
                    }
                }
            }
        }
        forked
    }

    /// Read what the rings hold and append the events that are safe to handle, in time order.
    /// `all` (at shutdown) releases everything read once both rings are read to their end;
    /// while one still holds more, the time order holds even then: a session's exit must not
    /// overtake its own file events still unread in the other ring, or its end would be written
    /// before them (and they would then belong to no session). Returns whether a ring has more.
    pub fn poll(&mut self, out: &mut Vec<Event>, all: bool) -> bool {
        let now = boot_ns();
        let mut cutoff = now.saturating_sub(IN_FLIGHT_NS);
        let mut more = false;
        for which in [0, 1] {
            let mut n = 0;
            let mut last = 0;
            while n < READ_BUDGET {
                let ring = if which == 0 { &mut self.lifecycle } else { &mut self.events };
                let Some(item) = ring.next() else { break };
                let ev = decode::decode(&item);
                n += item.len().max(1);
                drop(item);
                self.read += 1;
                match ev {
                    Ok(ev) => {
                        last = ev.header().ts_ns;
                        if last >= self.skip_before {
                            self.merger.push(ev);
                        }
                    }
                    Err(e) => {
                        self.decode_errors += 1;
                        tracing::warn!(error = %e, "undecodable event skipped");
                    }
                }
            }
            if n >= READ_BUDGET {
                // This ring was not read to its end: nothing after its last event is settled.
                more = true;
                cutoff = cutoff.min(last);
            }
        }
        self.merger.release(if all && !more { u64::MAX } else { cutoff }, out);
        more
    }

    /// Events read but held back for ordering.
    pub fn held(&self) -> usize {
        self.merger.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::decode::Header;

    fn exit(tgid: u32, ts_ns: u64) -> Event {
        let hdr = Header {
            kind: monitor_common::EventKind::Exit,
            cpu: 0,
            ts_ns,
            session_cgroup: 1,
            cgroup_id: 1,
            tgid,
            pid: tgid,
            start_ns: 0,
        };
        Event::Exit { hdr, status: 0, group_dead: true }
    }

    fn ts(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.header().ts_ns).collect()
    }

    #[test]
    fn merges_two_sources_by_time_and_holds_back_unsettled_events() {
        let mut m = Merger::default();
        // As if read from the lifecycle ring, then the file ring.
        for t in [10, 40, 70] {
            m.push(exit(1, t));
        }
        for t in [20, 30, 80] {
            m.push(exit(2, t));
        }
        let mut out = Vec::new();
        m.release(50, &mut out);
        assert_eq!(ts(&out), [10, 20, 30, 40]);
        assert_eq!(m.len(), 2, "70 and 80 wait: an earlier event may still come");
        m.push(exit(3, 60));
        out.clear();
        m.release(u64::MAX, &mut out);
        assert_eq!(ts(&out), [60, 70, 80]);
        assert!(m.is_empty());
    }

    #[test]
    fn equal_timestamps_keep_arrival_order() {
        let mut m = Merger::default();
        m.push(exit(1, 5));
        m.push(exit(2, 5));
        m.push(exit(3, 5));
        let mut out = Vec::new();
        m.release(5, &mut out);
        let tgids: Vec<u32> = out.iter().map(|e| e.header().tgid).collect();
        assert_eq!(tgids, [1, 2, 3]);
    }
}
