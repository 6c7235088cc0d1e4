//! Client authentication: the server greeting and mysql_native_password verification.
//!
//! The proxy stores `SHA1(SHA1(password))` only (the `*HEX` form MariaDB prints). A client
//! proves it knows the password by sending `SHA1(pw) XOR SHA1(salt ‖ SHA1(SHA1(pw)))`; the proxy
//! recovers `SHA1(pw)` and checks that its SHA1 is the stored hash.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;
use sha1::{Digest, Sha1};

/// What the proxy offers clients. No SSL, no compression and no LOCAL INFILE yet (docs/protocol.md).
pub const SERVER_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_LONG_FLAG.bits()
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB.bits()
        | CapabilityFlags::CLIENT_ODBC.bits()
        | CapabilityFlags::CLIENT_PROTOCOL_41.bits()
        | CapabilityFlags::CLIENT_INTERACTIVE.bits()
        | CapabilityFlags::CLIENT_TRANSACTIONS.bits()
        | CapabilityFlags::CLIENT_SECURE_CONNECTION.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH.bits()
        | CapabilityFlags::CLIENT_CONNECT_ATTRS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits(),
);

pub const NATIVE: &[u8] = b"mysql_native_password";

/// A client that asked for MariaDB's extended column metadata (MARIADB_CLIENT_EXTENDED_METADATA,
/// one of MariaDB's own capability flags, which travel in a separate field). Carried inside the
/// session's [`CapabilityFlags`] on a bit no client sends to a server (CLIENT_REMEMBER_OPTIONS is
/// a libmysqlclient option), so the backend pools keep such clients apart as they do for
/// CLIENT_DEPRECATE_EOF; [`crate::backend::BackendConn::connect`] turns it back into the
/// MariaDB flag and never sends the bit.
pub const EXT_METADATA: CapabilityFlags = CapabilityFlags::CLIENT_REMEMBER_OPTIONS;

/// The MariaDB capabilities the proxy offers: extended column metadata only (the format of
/// JSON, UUID and INET columns), which changes nothing but one field of column definitions.
/// Not offered: progress reports, bulk execution and metadata caching, which change the
/// commands and responses the proxy tracks.
pub const MARIADB_CAPS: mysql_common::constants::MariadbCapabilities =
    mysql_common::constants::MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;

/// A fresh 20-byte salt of printable ASCII (never NUL, which would end the field).
pub fn new_salt() -> [u8; 20] {
    let mut raw = [0u8; 20];
    // getrandom only fails when the OS has no entropy source at all.
    getrandom::fill(&mut raw).expect("the operating system's random source is unavailable");
    raw.map(|b| 0x21 + (b % 0x5E))
}

/// The greeting packet payload.
pub fn greeting(server_version: &str, connection_id: u32, salt: &[u8; 20]) -> Vec<u8> {
    let mut scramble_1 = [0u8; 8];
    scramble_1.copy_from_slice(&salt[..8]);
    let mut scramble_2 = salt[8..].to_vec();
    scramble_2.push(0);
    // Bit 0 (CLIENT_LONG_PASSWORD, "CLIENT_MYSQL") cleared, as MariaDB does: it tells clients
    // that MariaDB's own capabilities follow in the greeting.
    let hs = HandshakePacket::new(
        10,
        server_version.as_bytes(),
        connection_id,
        scramble_1,
        Some(scramble_2),
        SERVER_CAPS - CapabilityFlags::CLIENT_LONG_PASSWORD,
        45, // utf8mb4_general_ci, MariaDB 10.11's default
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    )
    .with_mariadb_ext_capabilities(MARIADB_CAPS);
    let mut buf = Vec::with_capacity(96);
    hs.serialize(&mut buf);
    buf
}

/// Checks a mysql_native_password response against the stored `SHA1(SHA1(password))`.
pub fn verify_native(salt: &[u8], token: &[u8], stage2: &[u8; 20]) -> bool {
    if token.is_empty() {
        return Sha1::digest(Sha1::digest(b"")).as_slice() == stage2;
    }
    if token.len() != 20 {
        return false;
    }
    let mut h = Sha1::new();
    h.update(salt);
    h.update(stage2);
    let mask = h.finalize();
    let stage1: Vec<u8> = token.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
    let check = Sha1::digest(&stage1);
    // Constant-time comparison: no early exit on the first differing byte.
    check
        .iter()
        .zip(stage2.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::scramble::scramble_native;
    use shard_rules::config::{hash_password, parse_password_hash};

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let salt = new_salt();
        let stage2 = parse_password_hash(&hash_password("demo")).unwrap();
        let good = scramble_native(&salt, b"demo").unwrap();
        let bad = scramble_native(&salt, b"demO").unwrap();
        assert!(verify_native(&salt, &good, &stage2));
        assert!(!verify_native(&salt, &bad, &stage2));
        assert!(!verify_native(&salt, &good[..19], &stage2));
        assert!(!verify_native(&salt, &[], &stage2));
    }

    #[test]
    fn an_empty_password_is_an_empty_token() {
        let stage2 = parse_password_hash(&hash_password("")).unwrap();
        assert!(verify_native(&new_salt(), &[], &stage2));
    }

    #[test]
    fn salts_are_printable_and_differ() {
        let (a, b) = (new_salt(), new_salt());
        assert!(a.iter().all(|c| (0x21..0x7F).contains(c)));
        assert_ne!(a, b);
    }
}
