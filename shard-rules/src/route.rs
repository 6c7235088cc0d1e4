//! ShardingKey → route code, and sets of route codes (`"0-4999"`, `"7"`).

use std::fmt;

use serde::Deserialize;

/// The business key a statement belongs to (the same type the hint parser gives).
pub use sql_hint::ShardingKey;

/// How ShardingKeys are read before they become route codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// Keys are integers (`buyer_id`). A string key that is a decimal integer (`'10086'`, as some
    /// drivers send parameters) routes as that integer; any other string is refused.
    #[default]
    Integer,
    /// Keys are strings. An integer key routes as its decimal text.
    String,
}

/// The route code function, exactly (other systems must compute the same codes):
/// - integer keys: `key mod count`, the non-negative remainder (`-1 mod 10000 = 9999`);
/// - string keys: `CRC32(utf8 bytes) mod count`, CRC-32/ISO-HDLC, the checksum of zlib and of
///   MySQL's `CRC32()` function, so `SELECT CRC32('alice') % 10000` gives the route code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFn {
    pub count: u32,
    pub key: KeyType,
}

/// Why a ShardingKey has no route code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ShardingKey {key} is not an integer (route_codes.key = \"integer\")")]
pub struct NotAnInteger {
    pub key: String,
}

impl RouteFn {
    pub fn route_code(&self, key: &ShardingKey) -> Result<u32, NotAnInteger> {
        let count = i64::from(self.count);
        match (self.key, key) {
            (KeyType::Integer, ShardingKey::Int(v)) => Ok(v.rem_euclid(count) as u32),
            (KeyType::Integer, ShardingKey::Str(s)) => match parse_decimal(s) {
                Some(v) => Ok(v.rem_euclid(count) as u32),
                None => Err(NotAnInteger {
                    key: key.to_string(),
                }),
            },
            (KeyType::String, ShardingKey::Str(s)) => Ok(crc32(s.as_bytes()) % self.count),
            (KeyType::String, ShardingKey::Int(v)) => {
                Ok(crc32(v.to_string().as_bytes()) % self.count)
            }
        }
    }
}

/// CRC-32/ISO-HDLC (zlib, MySQL `CRC32()`).
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A decimal integer as MySQL would compare it with an integer column: optional sign, digits,
/// surrounding spaces allowed. `None` for anything else or out of range.
pub(crate) fn parse_decimal(s: &str) -> Option<i64> {
    let t = s.trim_matches(' ');
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.strip_prefix('+').unwrap_or(t).parse().ok()
}

/// A set of route codes as written in rules: inclusive ranges `"a-b"` and single codes `"c"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSet {
    /// Sorted, non-overlapping, non-adjacent inclusive ranges.
    ranges: Vec<(u32, u32)>,
}

/// Why a route code list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeSetError {
    #[error("`{0}` is not a route code or a range `from-to`")]
    Syntax(String),
    #[error("range `{0}` goes backwards")]
    Backwards(String),
    #[error("`{item}` is outside the route codes 0-{max}")]
    OutOfRange { item: String, max: u32 },
}

impl CodeSet {
    /// Parses `items` against codes `0..count`; every bad item is reported.
    pub fn parse(items: &[String], count: u32) -> Result<CodeSet, Vec<CodeSetError>> {
        let mut ranges = Vec::new();
        let mut errors = Vec::new();
        let max = count.saturating_sub(1);
        for item in items {
            let t = item.trim();
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (t, t),
            };
            match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a > b => errors.push(CodeSetError::Backwards(item.clone())),
                (Ok(a), Ok(b)) if b > max || count == 0 => {
                    let _ = a;
                    errors.push(CodeSetError::OutOfRange {
                        item: item.clone(),
                        max,
                    })
                }
                (Ok(a), Ok(b)) => ranges.push((a, b)),
                _ => errors.push(CodeSetError::Syntax(item.clone())),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CodeSet::from_ranges(ranges))
    }

    /// The set of the given inclusive ranges (in any order, overlapping or not).
    pub fn from_ranges(mut ranges: Vec<(u32, u32)>) -> CodeSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        CodeSet { ranges: merged }
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
    }

    pub fn contains(&self, code: u32) -> bool {
        match self.ranges.binary_search_by(|(a, _)| a.cmp(&code)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.ranges[i - 1].1 >= code,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|(a, b)| *a..=*b)
    }
}

impl fmt::Display for CodeSet {
    /// `0-4999,7000` (empty: `none`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("none");
        }
        for (i, (a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str], count: u32) -> Result<CodeSet, Vec<CodeSetError>> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        CodeSet::parse(&items, count)
    }

    #[test]
    fn integer_keys_use_the_non_negative_remainder() {
        let f = RouteFn {
            count: 10_000,
            key: KeyType::Integer,
        };
        assert_eq!(f.route_code(&ShardingKey::Int(10086)).unwrap(), 86);
        assert_eq!(f.route_code(&ShardingKey::Int(-1)).unwrap(), 9999);
        assert_eq!(f.route_code(&ShardingKey::Int(i64::MIN)).unwrap(), 4192);
        assert_eq!(
            f.route_code(&ShardingKey::Str(" 10086".into())).unwrap(),
            86
        );
        let err = f.route_code(&ShardingKey::Str("alice".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ShardingKey 'alice' is not an integer (route_codes.key = \"integer\")"
        );
    }

    #[test]
    fn string_keys_use_mysql_crc32() {
        let f = RouteFn {
            count: 10_000,
            key: KeyType::String,
        };
        // MariaDB 10.11: SELECT CRC32('alice'), CRC32('10086') → 663665735, 1443254904.
        assert_eq!(crc32(b"alice"), 663_665_735);
        assert_eq!(
            f.route_code(&ShardingKey::Str("alice".into())).unwrap(),
            5735
        );
        assert_eq!(f.route_code(&ShardingKey::Int(10086)).unwrap(), 4904);
    }

    #[test]
    fn code_sets_parse_merge_and_report_every_bad_item() {
        let s = set(&["5000-9999", "7", "0-6", "8 - 10"], 10_000).unwrap();
        assert_eq!(s.ranges(), &[(0, 10), (5000, 9999)]);
        assert_eq!(s.to_string(), "0-10,5000-9999");
        assert_eq!(s.len(), 5011);
        assert!(s.contains(0) && s.contains(10) && s.contains(5000) && s.contains(9999));
        assert!(!s.contains(11) && !s.contains(4999));
        let errs = set(&["9-3", "x", "10000", "1-"], 10_000).unwrap_err();
        assert_eq!(
            errs,
            vec![
                CodeSetError::Backwards("9-3".into()),
                CodeSetError::Syntax("x".into()),
                CodeSetError::OutOfRange {
                    item: "10000".into(),
                    max: 9999
                },
                CodeSetError::Syntax("1-".into()),
            ]
        );
    }
}
