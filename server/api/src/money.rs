//! Exact money on the wire.
//!
//! Clients send dollars as JSON numbers (`"max_spend_usd": 5`), but qlaud
//! never does float arithmetic on money: a number is turned into integer
//! micro-dollars through its shortest decimal spelling, and anything finer
//! than a micro-dollar is refused rather than rounded.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-dollars in one US dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;

/// The largest amount qlaud accepts anywhere: one billion dollars. Larger
/// values are almost certainly typos and would only risk overflow later.
pub const MAX_USD: i64 = 1_000_000_000;

/// A non-negative US-dollar amount, exact to the micro-dollar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd {
    micros: i64,
}

impl Usd {
    /// An amount from integer micro-dollars; `None` when negative or absurd.
    pub fn from_micros(micros: i64) -> Option<Usd> {
        (0..=MAX_USD * MICROS_PER_USD).contains(&micros).then_some(Usd { micros })
    }

    /// The amount in micro-dollars.
    pub fn micros(self) -> i64 {
        self.micros
    }

    /// Parses a plain decimal such as `5`, `0.25` or `12.345678`.
    pub fn parse_decimal(s: &str) -> Result<Usd, String> {
        let s = s.trim();
        if s.starts_with('-') {
            return Err(format!("must not be negative (got {s})"));
        }
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("is not a decimal number (got {s:?})"));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 6 {
            return Err(format!(
                "has more precision than a micro-dollar allows (got {s}; at most 6 decimal places)"
            ));
        }
        let int = int.trim_start_matches('0');
        let too_large = || format!("is larger than the maximum of {MAX_USD} dollars (got {s})");
        if int.len() > 10 {
            return Err(too_large());
        }
        let whole: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| too_large())? };
        let mut frac_micros: i64 = if frac.is_empty() { 0 } else { frac.parse().unwrap_or(0) };
        for _ in frac.len()..6 {
            frac_micros *= 10;
        }
        whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|w| w.checked_add(frac_micros))
            .and_then(Usd::from_micros)
            .ok_or_else(too_large)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.micros / MICROS_PER_USD;
        let frac = self.micros % MICROS_PER_USD;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.micros % MICROS_PER_USD == 0 {
            // Whole dollars stay integers on the wire: `5`, not `5.0`.
            serializer.serialize_i64(self.micros / MICROS_PER_USD)
        } else {
            // The nearest double to an exact decimal; the decimal is the truth
            // and is what `..._micros` fields carry.
            let as_f64: f64 = self.to_string().parse().map_err(serde::ser::Error::custom)?;
            serializer.serialize_f64(as_f64)
        }
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        struct UsdVisitor;
        impl Visitor<'_> for UsdVisitor {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of US dollars")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Usd, E> {
                Usd::parse_decimal(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Usd, E> {
                Usd::parse_decimal(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Usd, E> {
                if !v.is_finite() {
                    return Err(E::custom("must be a finite number"));
                }
                // Rust prints the shortest decimal that reads back as `v`, and
                // never in exponent form, so `5.1` is parsed as 5.1 exactly.
                Usd::parse_decimal(&v.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(UsdVisitor)
    }
}

impl JsonSchema for Usd {
    fn schema_name() -> String {
        "Usd".to_string()
    }

    fn json_schema(_: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        use schemars::schema::*;
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "An amount in US dollars, exact to the micro-dollar (at most 6 decimal \
                     places), from 0 to 1000000000."
                        .to_string(),
                ),
                ..Default::default()
            })),
            instance_type: Some(InstanceType::Number.into()),
            format: Some("double".to_string()),
            number: Some(Box::new(NumberValidation {
                minimum: Some(0.0),
                maximum: Some(MAX_USD as f64),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Usd::parse_decimal("5").unwrap().micros(), 5_000_000);
        assert_eq!(Usd::parse_decimal("0.1").unwrap().micros(), 100_000);
        assert_eq!(Usd::parse_decimal("12.345678").unwrap().micros(), 12_345_678);
        assert_eq!(Usd::parse_decimal("1000000000").unwrap().micros(), MAX_USD * MICROS_PER_USD);
        assert!(Usd::parse_decimal("1000000000.000001").is_err());
        assert!(Usd::parse_decimal("0.0000001").is_err());
        assert!(Usd::parse_decimal("-1").is_err());
        assert!(Usd::parse_decimal("abc").is_err());
        assert!(Usd::parse_decimal(".").is_err());
    }

    #[test]
    fn json_round_trip() {
        let v: Usd = serde_json::from_str("5.1").unwrap();
        assert_eq!(v.micros(), 5_100_000);
        assert_eq!(serde_json::to_string(&v).unwrap(), "5.1");
        let v: Usd = serde_json::from_str("5").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "5");
        let v: Usd = serde_json::from_str("5.0").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "5");
        assert!(serde_json::from_str::<Usd>("1e300").is_err());
        assert!(serde_json::from_str::<Usd>("-0.5").is_err());
        assert!(serde_json::from_str::<Usd>("\"5\"").is_err());
    }
}
