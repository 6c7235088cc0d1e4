//! ShardingKey hint comments (`/* rb: sharding_key=… */`).
//!
//! This crate is a placeholder in the spine: the hint language, its parser and the zero-copy
//! stripping are issue 3. Nothing here is used by the proxy yet, and nothing pretends to parse.
