//! The admission queue: FIFO per identity, identities served round-robin.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the queue needs to know about an entry.
pub(crate) trait Queued {
    fn id(&self) -> u64;
    fn enqueued(&self) -> Instant;
}

/// Entries of one identity wait in FIFO order; identities take turns, so one identity with
/// many queued queries cannot starve the others. With a single identity it is a plain FIFO.
#[derive(Debug)]
pub(crate) struct AdmissionQueue<T> {
    lanes: HashMap<String, VecDeque<T>>,
    /// Identities with queued entries, in serving order.
    turn: VecDeque<String>,
    len: usize,
}

impl<T: Queued> AdmissionQueue<T> {
    pub fn new() -> Self {
        Self {
            lanes: HashMap::new(),
            turn: VecDeque::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries queued by `identity`.
    pub fn len_of(&self, identity: &str) -> usize {
        self.lanes.get(identity).map_or(0, VecDeque::len)
    }

    pub fn push(&mut self, identity: &str, entry: T) {
        match self.lanes.get_mut(identity) {
            Some(lane) => lane.push_back(entry),
            None => {
                self.lanes
                    .insert(identity.to_owned(), VecDeque::from([entry]));
                self.turn.push_back(identity.to_owned());
            }
        }
        self.len += 1;
    }

    /// The next entry: the oldest of the identity whose turn it is.
    pub fn pop(&mut self) -> Option<T> {
        let identity = self.turn.pop_front()?;
        let lane = self.lanes.get_mut(&identity)?;
        let entry = lane.pop_front();
        if lane.is_empty() {
            self.lanes.remove(&identity);
        } else {
            self.turn.push_back(identity);
        }
        if entry.is_some() {
            self.len -= 1;
        }
        entry
    }

    /// Removes the entry `id`, wherever it waits.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let (identity, pos) = self.lanes.iter().find_map(|(identity, lane)| {
            lane.iter()
                .position(|e| e.id() == id)
                .map(|pos| (identity.clone(), pos))
        })?;
        let lane = self.lanes.get_mut(&identity)?;
        let entry = lane.remove(pos);
        if lane.is_empty() {
            self.lanes.remove(&identity);
            self.turn.retain(|i| *i != identity);
        }
        if entry.is_some() {
            self.len -= 1;
        }
        entry
    }

    /// Removes the entries that waited `timeout` or longer at `now`.
    pub fn pop_expired(&mut self, now: Instant, timeout: Duration) -> Vec<T> {
        let mut expired = Vec::new();
        for lane in self.lanes.values_mut() {
            while lane
                .front()
                .is_some_and(|e| now.duration_since(e.enqueued()) >= timeout)
            {
                if let Some(e) = lane.pop_front() {
                    expired.push(e);
                }
            }
        }
        if !expired.is_empty() {
            self.len -= expired.len();
            self.lanes.retain(|_, lane| !lane.is_empty());
            let lanes = &self.lanes;
            self.turn.retain(|i| lanes.contains_key(i));
        }
        expired
    }

    /// When the oldest entry was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter_map(|lane| lane.front().map(Queued::enqueued))
            .min()
    }

    /// Removes every entry.
    pub fn drain(&mut self) -> Vec<T> {
        self.turn.clear();
        self.len = 0;
        self.lanes.drain().flat_map(|(_, lane)| lane).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct E(u64, Instant);

    impl Queued for E {
        fn id(&self) -> u64 {
            self.0
        }
        fn enqueued(&self) -> Instant {
            self.1
        }
    }

    fn ids(q: &mut AdmissionQueue<E>) -> Vec<u64> {
        std::iter::from_fn(|| q.pop()).map(|e| e.0).collect()
    }

    #[test]
    fn one_identity_is_fifo() {
        let now = Instant::now();
        let mut q = AdmissionQueue::new();
        for i in 0..5 {
            q.push("", E(i, now));
        }
        assert_eq!(q.len(), 5);
        assert_eq!(ids(&mut q), vec![0, 1, 2, 3, 4]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn identities_take_turns() {
        let now = Instant::now();
        let mut q = AdmissionQueue::new();
        for i in 0..4 {
            q.push("heavy", E(i, now));
        }
        q.push("light", E(10, now));
        q.push("other", E(20, now));
        q.push("light", E(11, now));
        assert_eq!(q.len_of("heavy"), 4);
        assert_eq!(ids(&mut q), vec![0, 10, 20, 1, 11, 2, 3]);
    }

    #[test]
    fn removal_and_expiry_keep_the_counts() {
        let start = Instant::now();
        let later = start + Duration::from_secs(5);
        let mut q = AdmissionQueue::new();
        q.push("a", E(1, start));
        q.push("a", E(2, later));
        q.push("b", E(3, start));
        q.push("c", E(4, later));
        assert_eq!(q.oldest(), Some(start));
        assert_eq!(q.remove(4).map(|e| e.0), Some(4));
        assert_eq!(q.remove(4), None);
        let expired = q.pop_expired(start + Duration::from_secs(2), Duration::from_secs(1));
        let mut expired: Vec<u64> = expired.into_iter().map(|e| e.0).collect();
        expired.sort();
        assert_eq!(expired, vec![1, 3]);
        assert_eq!((q.len(), q.oldest()), (1, Some(later)));
        assert_eq!(ids(&mut q), vec![2]);
        q.push("z", E(9, start));
        assert_eq!(q.drain().len(), 1);
        assert_eq!((q.len(), q.pop()), (0, None));
    }
}
