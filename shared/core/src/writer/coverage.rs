//! What a table holds of one source partition (docs/exactly-once.md): every position at or
//! below the watermark, except the open gaps.
//!
//! A gap is a run of offsets that a writer saw skipped (a batch starting past watermark+1, or
//! offsets missing inside one). It is stored in the same commit as the rows that revealed it,
//! as txn actions beside the watermark, so a later delivery of those offsets (an operator's
//! replay) is tabled once instead of being dropped as "already present". Layout, for source
//! app id `A` (Kafka offsets and line numbers only; Kinesis sequence numbers are not
//! contiguous, so a Kinesis shard has a watermark and no gaps):
//!
//! * `A`: the watermark (as before gaps existed);
//! * `A#gaps`: how many gap slots the source has ever needed at once;
//! * `A#gap<i>` and `A#gap<i>.end`: slot `i`'s first and last offset, or `-1` when the slot
//!   is free. A filled or closed gap frees its slot and a new gap reuses the first free one,
//!   so the number of txn actions grows with the most gaps open at once, not with history.
//!
//! Two writers that touch the same positions change the same app id (the watermark, or the
//! gap's slot), so Delta's conflict check on app ids refuses the second of two racing commits.

use crate::delta::Txns;
use crate::error::Result;
use crate::watermark::Mark;

/// An inclusive run of offsets.
pub type Gap = (i64, i64);

/// A source's coverage in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage<M: Mark> {
    pub mark: Option<M>,
    /// The lowest offset written (`i64::MIN` for sources written before floors were kept):
    /// offsets below it are not held, so a replay of older offsets is tabled, not dropped.
    floor: i64,
    /// Open gaps, sorted and disjoint, all below the watermark.
    gaps: Vec<Gap>,
    /// The stored slot layout: where each open gap sits (`None`: a free slot).
    slots: Vec<Option<Gap>>,
}

impl<M: Mark> Default for Coverage<M> {
    fn default() -> Self {
        Coverage { mark: None, floor: i64::MIN, gaps: Vec::new(), slots: Vec::new() }
    }
}

fn floor_id(app_id: &str) -> String {
    format!("{app_id}#floor")
}
fn gaps_id(app_id: &str) -> String {
    format!("{app_id}#gaps")
}
fn slot_ids(app_id: &str, i: usize) -> (String, String) {
    (format!("{app_id}#gap{i}"), format!("{app_id}#gap{i}.end"))
}

impl<M: Mark> Coverage<M> {
    /// The coverage of a source known only by its watermark (a Kinesis shard moved out of
    /// its slot into the shard archive).
    pub fn marked(mark: Option<M>) -> Self {
        Coverage { mark, ..Default::default() }
    }

    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// Whether the position is already held (written, or given up by an operator).
    pub fn holds(&self, p: &M) -> bool {
        match (&self.mark, p.offset()) {
            (Some(m), Some(o)) => p <= m && o >= self.floor && !self.in_gap(o),
            (Some(m), None) => p <= m,
            (None, _) => false,
        }
    }

    /// Whether every offset from `first` to `last` is held (an object wholly written).
    pub fn holds_all(&self, first: i64, last: i64) -> bool {
        let Some(mark) = self.mark.as_ref().and_then(|m| m.offset()) else { return false };
        let i = self.gaps.partition_point(|g| g.1 < first);
        first >= self.floor && last <= mark && self.gaps.get(i).is_none_or(|g| g.0 > last)
    }

    fn in_gap(&self, o: i64) -> bool {
        let i = self.gaps.partition_point(|g| g.1 < o);
        self.gaps.get(i).is_some_and(|g| g.0 <= o)
    }

    /// The coverage once `positions` (ascending, none held) are written; and how many gaps
    /// that opened. A source with no watermark opens no gap with its first position; offsets
    /// below the floor that arrive later lower it, opening a gap up to the old floor.
    pub fn cover(&self, positions: &[M]) -> (Coverage<M>, u64) {
        let mut mark = self.mark.clone();
        let mut floor = self.floor;
        let mut gaps = self.gaps.clone();
        let mut opened = 0;
        for p in positions {
            if mark.is_none() {
                floor = p.offset().unwrap_or(i64::MIN);
            } else if let Some(po) = p.offset().filter(|&po| po < floor) {
                if po + 1 < floor {
                    gaps.insert(0, (po + 1, floor - 1));
                    opened += 1;
                }
                floor = po;
                continue;
            }
            if mark.as_ref().is_none_or(|m| p > m) {
                if let (Some(mo), Some(po)) = (mark.as_ref().and_then(|m| m.offset()), p.offset()) {
                    if po > mo + 1 {
                        gaps.push((mo + 1, po - 1));
                        opened += 1;
                    }
                }
                mark = Some(p.clone());
            } else if let Some(o) = p.offset() {
                let i = gaps.partition_point(|g| g.1 < o);
                if let Some(&(s, e)) = gaps.get(i).filter(|g| g.0 <= o) {
                    let mut parts = Vec::with_capacity(2);
                    if s < o {
                        parts.push((s, o - 1));
                    }
                    if o < e {
                        parts.push((o + 1, e));
                    }
                    gaps.splice(i..=i, parts);
                }
            }
        }
        (self.relayout(mark, floor, gaps), opened)
    }

    /// Everything either coverage holds (the quarantine's coverage grows to include the data
    /// table's, so the two never drift apart into gaps of their own).
    pub fn union(&self, other: &Coverage<M>) -> Coverage<M> {
        let mark = match (&self.mark, &other.mark) {
            (Some(a), Some(b)) => Some(if a >= b { a.clone() } else { b.clone() }),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        let Some(top) = mark.as_ref().and_then(|m| m.offset()) else {
            return self.relayout(mark, i64::MIN, Vec::new());
        };
        let floor = [self, other].iter().filter(|c| c.mark.is_some()).map(|c| c.floor).min().unwrap_or(i64::MIN);
        // Absent runs of each side from the new floor up to the new watermark; the union's
        // gaps are their overlap.
        let absent = |c: &Coverage<M>| -> Vec<Gap> {
            let Some(m) = c.mark.as_ref().and_then(|m| m.offset()) else { return vec![(floor, top)] };
            let mut v = Vec::new();
            if c.floor > floor {
                v.push((floor, c.floor - 1));
            }
            v.extend(c.gaps.iter().copied());
            if m < top {
                v.push((m + 1, top));
            }
            v
        };
        let (a, b) = (absent(self), absent(other));
        let (mut i, mut j, mut gaps) = (0, 0, Vec::new());
        while i < a.len() && j < b.len() {
            let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
            if s <= e {
                gaps.push((s, e));
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        self.relayout(mark, floor, gaps)
    }

    /// The same coverage without `gap` (an operator gave it up: those offsets count as held).
    pub fn close(&self, gap: Gap) -> Coverage<M> {
        let gaps = self.gaps.iter().copied().filter(|g| *g != gap).collect();
        self.relayout(self.mark.clone(), self.floor, gaps)
    }

    /// `gaps` placed in slots: a gap already stored keeps its slot, a new one takes the first
    /// free slot (or a new one), so unchanged gaps write nothing.
    fn relayout(&self, mark: Option<M>, floor: i64, gaps: Vec<Gap>) -> Coverage<M> {
        let mut slots: Vec<Option<Gap>> =
            self.slots.iter().map(|s| s.filter(|g| gaps.binary_search(g).is_ok())).collect();
        for g in &gaps {
            if slots.contains(&Some(*g)) {
                continue;
            }
            match slots.iter_mut().find(|s| s.is_none()) {
                Some(free) => *free = Some(*g),
                None => slots.push(Some(*g)),
            }
        }
        Coverage { mark, floor, gaps, slots }
    }

    /// The txn actions that turn the stored `self` into `next` (only what changed). A floor
    /// at the lowest position the source can hold is not written where none is stored: it
    /// holds what no floor holds, and a source cleaned from its start (a JSON Lines file, a
    /// partition from offset 0) then keeps only the contract's watermark action.
    pub fn txns_to(&self, app_id: &str, next: &Coverage<M>) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        if let Some(m) = next.mark.as_ref().filter(|m| self.mark.as_ref() != Some(*m)) {
            out.extend(m.txns(app_id));
        }
        let floor_needed = !(self.floor == i64::MIN && next.floor <= crate::storage::landing::lowest_position(app_id));
        if next.floor != self.floor && floor_needed && next.mark.as_ref().is_some_and(|m| m.offset().is_some()) {
            out.push((floor_id(app_id), next.floor));
        }
        if next.slots.len() > self.slots.len() {
            out.push((gaps_id(app_id), next.slots.len() as i64));
        }
        for (i, slot) in next.slots.iter().enumerate() {
            if self.slots.get(i).copied().flatten() != *slot {
                let (start, end) = slot_ids(app_id, i);
                let (s, e) = slot.unwrap_or((-1, -1));
                out.push((start, s));
                out.push((end, e));
            }
        }
        out
    }

    /// A source's coverage as stored in a table's txn actions.
    pub fn from_txns(txns: &Txns, app_id: &str) -> Result<Coverage<M>> {
        let versions: Vec<Option<i64>> = M::app_ids(app_id).iter().map(|id| txns.get(id)).collect();
        let mark = M::from_versions(app_id, &versions)?;
        let mut slots = Vec::new();
        let mut floor = i64::MIN;
        if mark.as_ref().is_some_and(|m| m.offset().is_some()) {
            floor = txns.get(&floor_id(app_id)).unwrap_or(i64::MIN);
            for i in 0..txns.get(&gaps_id(app_id)).unwrap_or(0).max(0) as usize {
                let (start, end) = slot_ids(app_id, i);
                let (s, e) = (txns.get(&start).unwrap_or(-1), txns.get(&end).unwrap_or(-1));
                slots.push((s >= 0 && e >= s).then_some((s, e)));
            }
        }
        let mut gaps: Vec<Gap> = slots.iter().flatten().copied().collect();
        gaps.sort_unstable();
        Ok(Coverage { mark, floor, gaps, slots })
    }
}

/// Every open gap in a table's txn actions: (source app id, gap), by source.
pub fn open_gaps(txns: &Txns) -> Result<Vec<(String, Gap)>> {
    let mut sources: Vec<&str> = txns.app_ids().filter_map(|id| id.strip_suffix("#gaps")).collect();
    sources.sort_unstable();
    let mut out = Vec::new();
    for app_id in sources {
        let c: Coverage<i64> = Coverage::from_txns(txns, app_id)?;
        out.extend(c.gaps().iter().map(|g| (app_id.to_string(), *g)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(c: &Coverage<i64>, upto: i64) -> Vec<i64> {
        (0..=upto).filter(|o| c.holds(o)).collect()
    }

    #[test]
    fn gaps_open_fill_and_reuse_slots() {
        let c = Coverage::<i64>::default();
        let (c, opened) = c.cover(&[5, 6, 7]);
        assert_eq!((opened, c.gaps()), (0, &[][..]), "the first batch opens no gap");
        let (c, opened) = c.cover(&[10, 11, 14]);
        assert_eq!((opened, c.gaps()), (2, &[(8, 9), (12, 13)][..]));
        assert_eq!(held(&c, 15), vec![5, 6, 7, 10, 11, 14]);
        assert!(c.holds_all(5, 7) && c.holds_all(10, 11) && c.holds_all(14, 14));
        assert!(!c.holds_all(4, 7) && !c.holds_all(7, 10) && !c.holds_all(11, 15) && !c.holds_all(12, 12));
        let (c2, _) = c.cover(&[8, 13]);
        assert_eq!(c2.gaps(), &[(9, 9), (12, 12)]);
        let (c3, _) = c2.cover(&[9, 12]);
        assert!(c3.gaps().is_empty());
        assert_eq!(held(&c3, 15), (5..=14).collect::<Vec<_>>());
        // Filled gaps free their slots; the next gap reuses slot 0 and the count stays 2.
        let (c4, _) = c3.cover(&[20]);
        let txns = c3.txns_to("a", &c4);
        assert!(txns.contains(&("a#gap0".into(), 15)) && txns.contains(&("a#gap0.end".into(), 19)), "{txns:?}");
        assert!(!txns.iter().any(|t| t.0 == "a#gaps"));
    }

    /// A source cleaned from its lowest position stores no floor, and reads back the same.
    #[test]
    fn a_floor_at_the_lowest_position_is_not_stored() {
        for (app_id, from, stored) in [("pin.jsonl-0", 1, false), ("t.user-0", 0, false), ("t.user-0", 5, true), ("d/geo.json-0", 2, true)] {
            let (next, _) = Coverage::<i64>::default().cover(&[from, from + 1]);
            let txns = Coverage::<i64>::default().txns_to(app_id, &next);
            assert_eq!(txns.iter().any(|(id, _)| id.ends_with("#floor")), stored, "{app_id} from {from}: {txns:?}");
            let mut t = Txns::default();
            t.set_all(&txns, None);
            let back: Coverage<i64> = Coverage::from_txns(&t, app_id).unwrap();
            let lowest = crate::storage::landing::lowest_position(app_id);
            assert!((lowest..from + 4).all(|p| back.holds(&p) == next.holds(&p)), "{app_id} from {from}");
        }
        // A stored floor lowered to the lowest position is written.
        let (c, _) = Coverage::<i64>::default().cover(&[5]);
        let (lower, _) = c.cover(&[0]);
        assert!(c.txns_to("t.user-0", &lower).contains(&("t.user-0#floor".into(), 0)));
    }

    #[test]
    fn older_offsets_arriving_late_lower_the_floor() {
        let (c, _) = Coverage::<i64>::default().cover(&[5, 6]);
        assert!(!c.holds(&4));
        let (c, opened) = c.cover(&[1, 2]);
        assert_eq!((opened, c.gaps()), (1, &[(3, 4)][..]));
        assert_eq!(held(&c, 8), vec![1, 2, 5, 6]);
        let (c, _) = c.cover(&[0, 3, 4]);
        assert_eq!(held(&c, 8), (0..=6).collect::<Vec<_>>());
        assert!(c.gaps().is_empty());
    }

    #[test]
    fn union_keeps_what_either_side_holds() {
        let (d, _) = Coverage::<i64>::default().cover(&[0, 1, 2, 6, 7]);
        let (q, _) = Coverage::<i64>::default().cover(&[0, 1, 2, 3]);
        let u = q.union(&d);
        assert_eq!(u.gaps(), &[(4, 5)]);
        assert_eq!(u.mark, Some(7));
        assert_eq!(Coverage::<i64>::default().union(&d), d.union(&Coverage::default()));
    }
}
