//! Identifiers and short texts that must be plain: no control characters.
//!
//! Used with `#[serde(deserialize_with = …)]` on path and query fields, so a
//! `%00` in a key id or a filter is a 400 that names the field's rule, not a
//! lookup that quietly finds nothing. (schemars ignores `deserialize_with`:
//! the documented schema stays a string.)

use serde::{Deserialize, Deserializer, de};

/// Whether `s` contains a control character (C0, DEL or C1).
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A string without control characters.
pub fn plain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if has_control(&s) {
        return Err(de::Error::custom(format!("{s:?} must not contain control characters")));
    }
    Ok(s)
}

/// An optional string without control characters.
pub fn plain_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(s) = &s
        && has_control(s)
    {
        return Err(de::Error::custom(format!("{s:?} must not contain control characters")));
    }
    Ok(s)
}
