//! Rainbow Bridge's rule model: the configuration DBAs and operators edit, validated as a whole.
//!
//! Pure code, no I/O. In the spine this holds the proxy configuration (instance, rooms, data
//! sources, logical databases, users, pools). Traffic rules, write-bans and table rules are
//! issue 5.

pub mod config;

pub use config::{Config, ConfigError, ConfigProblem};
