//! Failed sign-ins, counted per user name and per client address, so that password
//! guessing stops after a few tries instead of running at thousands per second.
//!
//! Once a user name (or an address) has [`SignInThrottle::max_failures`] failed
//! sign-ins within [`WINDOW`], every sign-in with a password for it is refused, right or
//! wrong, until the oldest failure leaves the window. An IPv6 client counts by its /64
//! (one subscriber's network hands out far more addresses than anyone could count). Tokens already issued keep
//! working: a guesser cannot lock a signed-in user out of their session. Memory is
//! bounded: at most [`MAX_TRACKED`] names and addresses are tracked, and ones with no
//! failure in the window are forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failure counts.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Names and addresses tracked at once, each.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
pub(crate) struct SignInThrottle {
    pub max_failures: usize,
    users: Mutex<HashMap<String, VecDeque<Instant>>>,
    addresses: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl SignInThrottle {
    /// `max_failures` per user name; an address may fail three times as often (several
    /// people behind one NAT mistype passwords too).
    pub(crate) fn new(max_failures: usize) -> Self {
        SignInThrottle {
            max_failures: max_failures.max(1),
            users: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` if sign-ins for `user` or from `address` are refused now.
    pub(crate) fn check(&self, user: &str, address: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        let by_user = wait(&self.users, user, self.max_failures, now);
        let by_address = address
            .map(|a| wait(&self.addresses, &network(a), 3 * self.max_failures, now))
            .unwrap_or(0);
        match by_user.max(by_address) {
            0 => Ok(()),
            seconds => Err(seconds),
        }
    }

    /// Count a failure. True while neither the name nor the address is over its bound
    /// (failures past it are not worth an audit record each).
    pub(crate) fn failed(&self, user: &str, address: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut within = record(&self.users, user.to_string(), now) <= self.max_failures;
        if let Some(a) = address {
            within &= record(&self.addresses, network(a), now) <= 3 * self.max_failures;
        }
        within
    }

    /// A right password clears the user's failures (not the address's).
    pub(crate) fn succeeded(&self, user: &str) {
        if let Ok(mut users) = self.users.lock() {
            users.remove(user);
        }
    }
}

/// What failures from `address` count against: an IPv4 address (also when mapped into
/// IPv6), or an IPv6 address's /64.
fn network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Seconds until `key` may try again (0: now).
fn wait<K, Q>(map: &Mutex<HashMap<K, VecDeque<Instant>>>, key: &Q, max: usize, now: Instant) -> u64
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let Ok(mut map) = map.lock() else { return 0 };
    let Some(failures) = map.get_mut(key) else {
        return 0;
    };
    while failures
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        failures.pop_front();
    }
    if failures.len() < max {
        return 0;
    }
    failures
        .front()
        .map_or(0, |t| (WINDOW - now.duration_since(*t)).as_secs().max(1))
}

/// Add a failure of `key`; how many it has in the window now.
fn record<K: std::hash::Hash + Eq + Clone>(
    map: &Mutex<HashMap<K, VecDeque<Instant>>>,
    key: K,
    now: Instant,
) -> usize {
    let Ok(mut map) = map.lock() else { return 0 };
    if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
        map.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        if map.len() >= MAX_TRACKED {
            // Still full of live failures: forget the one whose last failure is oldest.
            let oldest = map
                .iter()
                .min_by_key(|(_, f)| f.back().copied())
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
    }
    let failures = map.entry(key).or_default();
    failures.push_back(now);
    while failures
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        failures.pop_front();
    }
    // Only the last `max` matter; keep the queue short.
    while failures.len() > 64 {
        failures.pop_front();
    }
    failures.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_a_user_and_an_address_for_a_while() {
        let t = SignInThrottle::new(3);
        let here: IpAddr = "127.0.0.1".parse().expect("ip");
        let there: IpAddr = "127.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(t.check("ana", Some(here)), Ok(()));
            t.failed("ana", Some(here));
        }
        // ana is locked from anywhere.
        assert!(
            t.check("ana", Some(there))
                .is_err_and(|s| (1..=60).contains(&s))
        );
        // Another user from the same address is not, until the address's own bound.
        assert_eq!(t.check("bob", Some(here)), Ok(()));
        for i in 0..6 {
            t.failed(&format!("guess{i}"), Some(here));
        }
        assert!(t.check("bob", Some(here)).is_err());
        assert_eq!(t.check("bob", Some(there)), Ok(()));
        // A right password clears the user's count.
        t.succeeded("ana");
        assert_eq!(t.check("ana", Some(there)), Ok(()));
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let t = SignInThrottle::new(1);
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        // Three guesses, each from another address of one /64 and for another name.
        for (i, a) in [
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff::9",
            "2001:db8:1:2:1:2:3:4",
        ]
        .iter()
        .enumerate()
        {
            t.failed(&format!("guess{i}"), Some(ip(a)));
        }
        assert!(t.check("bob", Some(ip("2001:db8:1:2:dead::beef"))).is_err());
        assert_eq!(t.check("bob", Some(ip("2001:db8:1:3::1"))), Ok(()));
        // An IPv4 client seen through an IPv6 socket is that IPv4 address.
        assert_eq!(network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }
}
