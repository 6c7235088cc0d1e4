//! `cargo fuzz run parse` (from `sql-hint/`): any bytes are parsed without a panic, and the
//! stripped SQL of a statement with a hint has no hint left.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = sql_hint::parse(data) {
        if p.hint.is_some() {
            if let Ok(again) = sql_hint::parse(&p.sql) {
                assert!(again.hint.is_none(), "stripping left a hint behind");
            }
        }
    }
});
