//! Priced units as data: a unit is a name (`input_tokens`, `requests`,
//! `audio_seconds`, …), a price is micro-dollars per million of it, and a
//! call's usage is a quantity per unit. Adding a unit is configuration;
//! nothing here names a unit but the few every model call measures.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// A priced unit, by name. Names are interned once (configuration is read
/// once), so a unit is a pointer-sized copy on the request path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unit(&'static str);

impl Unit {
    pub const INPUT_TOKENS: Unit = Unit("input_tokens");
    pub const OUTPUT_TOKENS: Unit = Unit("output_tokens");
    pub const CACHE_READ_TOKENS: Unit = Unit("cache_read_tokens");
    pub const CACHE_WRITE_TOKENS: Unit = Unit("cache_write_tokens");
    /// One per call, whatever it did: a per-request fee.
    pub const REQUESTS: Unit = Unit("requests");

    /// The unit of this name.
    pub fn named(name: &str) -> Unit {
        static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
        let mut names =
            NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        match names.get(name) {
            Some(n) => Unit(n),
            None => {
                let n: &'static str = Box::leak(name.to_string().into_boxed_str());
                names.insert(n);
                Unit(n)
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Units one model or call may carry at most.
pub const MAX_UNITS: usize = 8;

/// A small map from unit to value, kept inline (no allocation per call).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UnitMap<T: Copy + Default> {
    items: [(Unit, T); MAX_UNITS],
    len: usize,
}

impl<T: Copy + Default> Default for UnitMap<T> {
    fn default() -> UnitMap<T> {
        UnitMap { items: [(Unit::REQUESTS, T::default()); MAX_UNITS], len: 0 }
    }
}

impl<T: Copy + Default + std::fmt::Debug> std::fmt::Debug for UnitMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T: Copy + Default> UnitMap<T> {
    pub fn get(&self, unit: Unit) -> Option<T> {
        self.items[..self.len].iter().find(|(u, _)| *u == unit).map(|(_, v)| *v)
    }

    /// Sets `unit`; `Err` when the map already holds `MAX_UNITS` others.
    pub fn set(&mut self, unit: Unit, value: T) -> Result<(), Unit> {
        if let Some(slot) = self.items[..self.len].iter_mut().find(|(u, _)| *u == unit) {
            slot.1 = value;
            return Ok(());
        }
        if self.len == MAX_UNITS {
            return Err(unit);
        }
        self.items[self.len] = (unit, value);
        self.len += 1;
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (Unit, T)> + '_ {
        self.items[..self.len].iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Prices: micro-dollars per million units (pico-dollars per unit), so
/// every sum is an exact integer.
pub type Prices = UnitMap<i64>;
/// What a call used, per unit.
pub type Quantities = UnitMap<u64>;

impl Prices {
    /// Token prices (micro-dollars per million tokens).
    pub fn tokens(input: i64, output: i64, cache_read: i64, cache_write: i64) -> Prices {
        let mut p = Prices::default();
        for (unit, price) in [
            (Unit::INPUT_TOKENS, input),
            (Unit::OUTPUT_TOKENS, output),
            (Unit::CACHE_READ_TOKENS, cache_read),
            (Unit::CACHE_WRITE_TOKENS, cache_write),
        ] {
            // Four units always fit.
            let _ = p.set(unit, price);
        }
        p
    }

    /// The price of `unit`; a unit without a price costs nothing.
    pub fn of(&self, unit: Unit) -> i64 {
        self.get(unit).unwrap_or(0)
    }

    /// The dearest price an input token can be billed at (the input, cache
    /// read or cache write price): what a prompt's bound is reserved at.
    pub fn dearest_input(&self) -> i64 {
        [Unit::INPUT_TOKENS, Unit::CACHE_READ_TOKENS, Unit::CACHE_WRITE_TOKENS]
            .into_iter()
            .map(|u| self.of(u))
            .max()
            .unwrap_or(0)
    }
}

/// The cost of `q` at `prices`, in micro-dollars, rounded up once per call,
/// so a call is charged at least what it used and per-call costs add up to
/// exactly the totals reported.
pub fn cost_micros(prices: &Prices, q: &Quantities) -> i64 {
    let pico: i128 = q.iter().map(|(u, n)| i128::from(n) * i128::from(prices.of(u))).sum();
    i64::try_from((pico + 999_999) / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_interned_names() {
        assert_eq!(Unit::named("input_tokens"), Unit::INPUT_TOKENS);
        let a = Unit::named("audio_seconds");
        assert_eq!(a, Unit::named("audio_seconds"));
        assert_eq!(a.as_str(), "audio_seconds");
    }

    #[test]
    fn a_map_holds_up_to_its_capacity() {
        let mut m = Quantities::default();
        for i in 0..MAX_UNITS {
            m.set(Unit::named(&format!("u{i}")), i as u64).unwrap();
        }
        m.set(Unit::named("u3"), 9).unwrap();
        assert_eq!(m.get(Unit::named("u3")), Some(9));
        assert!(m.set(Unit::named("one_more"), 1).is_err());
    }

    #[test]
    fn cost_sums_every_unit_and_rounds_up_once() {
        let mut p = Prices::default();
        p.set(Unit::INPUT_TOKENS, 3_000_000).unwrap();
        p.set(Unit::OUTPUT_TOKENS, 15_000_000).unwrap();
        p.set(Unit::REQUESTS, 10_000_000_000).unwrap(); // $0.01 per request
        let mut call = Quantities::default();
        call.set(Unit::INPUT_TOKENS, 1000).unwrap();
        call.set(Unit::OUTPUT_TOKENS, 1).unwrap();
        call.set(Unit::REQUESTS, 1).unwrap();
        // 3000 + 15 + 10000 µ$.
        assert_eq!(cost_micros(&p, &call), 13_015);
        let mut q = Quantities::default();
        q.set(Unit::INPUT_TOKENS, 1).unwrap();
        q.set(Unit::named("unpriced"), 1_000_000).unwrap();
        assert_eq!(cost_micros(&p, &q), 3);
        assert_eq!(p.dearest_input(), 3_000_000);
    }
}
