//! Admission of TLS handshakes: how many may be in flight, overall and per source address.
//!
//! Before a client has completed the handshake nothing about it is known but its address, so
//! an unauthenticated peer must not be able to hold more than a bounded share of the agent.
//! [`Handshakes`] keeps a table of the handshakes in flight:
//!
//! - a source already holding `max_per_source` handshakes is refused at once;
//! - when `max_total` are in flight, the newcomer takes the place of the oldest handshake of
//!   the source holding the most, provided that source holds more than the newcomer's does;
//!   otherwise the newcomer is refused. A flood from many addresses thus ends up with equal
//!   shares, and a controller that has no handshake in flight (nearly always the case, a
//!   handshake takes milliseconds) always gets in, whatever the flood.
//!
//! A source is an IPv4 address, or the /64 network of an IPv6 address (one host can hold a
//! whole /64); an IPv4-mapped IPv6 address counts as its IPv4 address.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Where a connection comes from, as far as the handshake caps are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6Net(net) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*net) << 64)),
        }
    }
}

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds `max_per_source` handshakes.
    SourceFull,
    /// `max_total` are in flight and no source holds more than the newcomer's.
    AllFull,
}

/// The handshakes in flight; see the module documentation.
#[derive(Debug)]
pub struct Handshakes {
    max_total: usize,
    max_per_source: usize,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    total: usize,
    /// Per source, its handshakes by id (ids grow, so the first is the oldest); dropping a
    /// sender tells that handshake it was evicted.
    sources: HashMap<Source, BTreeMap<u64, oneshot::Sender<()>>>,
    /// Every source with handshakes, by (count, oldest first): the last is the one to evict from.
    order: BTreeSet<(usize, Reverse<u64>, Source)>,
}

impl Table {
    fn key(&self, source: Source) -> Option<(usize, Reverse<u64>, Source)> {
        let pending = self.sources.get(&source)?;
        let (&oldest, _) = pending.first_key_value()?;
        Some((pending.len(), Reverse(oldest), source))
    }

    /// Runs `change` on `source`'s handshakes, keeping `order` and `total` in step.
    fn update<R>(
        &mut self,
        source: Source,
        change: impl FnOnce(&mut BTreeMap<u64, oneshot::Sender<()>>) -> R,
    ) -> R {
        if let Some(key) = self.key(source) {
            self.order.remove(&key);
        }
        let pending = self.sources.entry(source).or_default();
        let before = pending.len();
        let result = change(pending);
        let after = pending.len();
        if after == 0 {
            self.sources.remove(&source);
        }
        self.total = self.total + after - before;
        if let Some(key) = self.key(source) {
            self.order.insert(key);
        }
        result
    }

    fn count(&self, source: Source) -> usize {
        self.sources.get(&source).map_or(0, BTreeMap::len)
    }
}

/// A handshake's place in the table; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    handshakes: Arc<Handshakes>,
    source: Source,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Resolves when a newcomer took this handshake's place.
    pub async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }

    pub fn source(&self) -> Source {
        self.source
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let id = self.id;
        self.handshakes.lock().update(self.source, |pending| {
            pending.remove(&id);
        });
    }
}

/// A handshake admitted, and the source it displaced if the table was full.
#[derive(Debug)]
pub struct Admitted {
    pub slot: Slot,
    pub evicted: Option<Source>,
}

impl Handshakes {
    /// Caps of at least 1 each (0 is read as 1: a cap of 0 would refuse every controller).
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent even if a holder panicked: every change is one update.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many handshakes are in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    /// Admits a handshake from `source`, evicting another if the table is full and fairness
    /// says so, or tells why not.
    pub fn admit(self: &Arc<Self>, source: Source) -> Result<Admitted, Refusal> {
        let mut table = self.lock();
        let mine = table.count(source);
        if mine >= self.max_per_source {
            return Err(Refusal::SourceFull);
        }
        let mut evicted = None;
        if table.total >= self.max_total {
            let Some(&(most, _, victim)) = table.order.last() else {
                return Err(Refusal::AllFull);
            };
            if most <= mine {
                return Err(Refusal::AllFull);
            }
            table.update(victim, |pending| {
                // Dropping the sender wakes the evicted handshake, which then closes.
                pending.pop_first();
            });
            evicted = Some(victim);
        }
        let id = table.next_id;
        table.next_id += 1;
        let (tx, rx) = oneshot::channel();
        table.update(source, |pending| {
            pending.insert(id, tx);
        });
        Ok(Admitted {
            slot: Slot {
                handshakes: self.clone(),
                source,
                id,
                evicted: rx,
            },
            evicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(last: u8) -> Source {
        Source::V4(Ipv4Addr::new(127, 0, 1, last))
    }

    fn was_evicted(slot: &mut Slot) -> bool {
        !matches!(slot.evicted.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    #[test]
    fn a_source_is_refused_beyond_its_cap_and_admitted_again_once_one_ends() {
        let h = Handshakes::new(100, 2);
        let a = h.admit(src(1)).expect("first");
        let _b = h.admit(src(1)).expect("second");
        assert_eq!(h.admit(src(1)).err(), Some(Refusal::SourceFull));
        assert!(h.admit(src(2)).is_ok(), "another source is not affected");
        drop(a);
        assert!(h.admit(src(1)).is_ok());
    }

    #[test]
    fn when_full_a_newcomer_displaces_the_oldest_of_the_source_holding_the_most() {
        let h = Handshakes::new(4, 10);
        let mut a1 = h.admit(src(1)).expect("a1").slot;
        let mut a2 = h.admit(src(1)).expect("a2").slot;
        let mut a3 = h.admit(src(1)).expect("a3").slot;
        let mut b1 = h.admit(src(2)).expect("b1").slot;
        assert_eq!(h.in_flight(), 4);
        let c = h.admit(src(3)).expect("a newcomer gets in");
        assert_eq!(c.evicted, Some(src(1)));
        assert!(was_evicted(&mut a1), "the oldest of the biggest source goes");
        assert!(!was_evicted(&mut a2) && !was_evicted(&mut a3) && !was_evicted(&mut b1));
        assert_eq!(h.in_flight(), 4);
        drop(a1);
        assert_eq!(h.in_flight(), 4, "an evicted slot was already freed");
        // src(1) holds 2, src(2) and src(3) 1 each: src(2) may displace src(1) once more...
        let b2 = h.admit(src(2)).expect("b2");
        assert_eq!(b2.evicted, Some(src(1)));
        assert!(was_evicted(&mut a2));
        // ... and now src(2) holds the most (2): it may not displace anyone.
        assert_eq!(h.admit(src(2)).err(), Some(Refusal::AllFull));
        assert!(!was_evicted(&mut a3) && !was_evicted(&mut b1));
    }

    #[test]
    fn a_flood_from_many_sources_never_locks_out_a_source_with_nothing_in_flight() {
        // 40 flood sources, each wanting its 8, share 64 places.
        let h = Handshakes::new(64, 8);
        let mut flood = Vec::new();
        let storm = |h: &Arc<Handshakes>, flood: &mut Vec<Slot>| {
            for _round in 0..20 {
                for s in 1..=40u8 {
                    if let Ok(a) = h.admit(src(s)) {
                        flood.push(a.slot);
                    }
                }
            }
        };
        storm(&h, &mut flood);
        assert_eq!(h.in_flight(), 64);
        let controller = Source::V4(Ipv4Addr::new(127, 0, 0, 1));
        let mine = h.admit(controller).expect("the controller gets in");
        assert!(mine.evicted.is_some());
        // The controller's source holds the least; the flood evicts among its own sources.
        let mut mine = mine.slot;
        storm(&h, &mut flood);
        assert!(!was_evicted(&mut mine));
        assert_eq!(h.in_flight(), 64);
    }

    #[test]
    fn ties_evict_the_oldest_handshake() {
        let h = Handshakes::new(3, 1);
        let mut a = h.admit(src(1)).expect("a").slot;
        let mut b = h.admit(src(2)).expect("b").slot;
        let mut c = h.admit(src(3)).expect("c").slot;
        // Every source holds 1, the newcomer 0: the oldest of all goes.
        assert_eq!(h.admit(src(4)).map(|a| a.evicted).ok(), Some(Some(src(1))));
        assert!(was_evicted(&mut a));
        assert!(!was_evicted(&mut b) && !was_evicted(&mut c));
    }

    #[test]
    fn ipv6_sources_are_their_64_networks_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().expect("ip");
        assert_eq!(Source::of(mapped), Source::V4(Ipv4Addr::new(127, 0, 0, 9)));
    }
}
