//! Room-aware distributed IDs (snowflake layout with a room field).
//!
//! This crate is a placeholder in the spine: the generator is issue 4. Nothing here is used by
//! the proxy yet, and nothing pretends to generate IDs.
