//! Rainbow Bridge, the proxy: MySQL protocol towards clients, relay of backend packets,
//! backend pools per data source, sessions that pool statements and pin when they must.
//!
//! Module map (DESIGN.md, statement pipeline): `server` accepts clients; `session` runs the
//! per-command pipeline; `classify` analyses statements; `backend` and `pool` own the
//! connections to MariaDB; `response` finds where a backend response ends; `packet` frames
//! bytes; `auth` verifies passwords; `error` maps every proxy error to a MySQL error.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod classify;
pub mod cluster;
pub mod compat;
pub mod ctl;
pub mod enforce;
pub mod error;
pub mod lint;
pub mod merge;
pub mod metrics;
pub mod packet;
pub mod pool;
pub mod reload;
pub mod response;
pub mod segments;
pub mod server;
pub mod session;
pub mod xa;
