//! Every error the proxy itself sends to a client, and the one function that turns an error
//! into a MySQL ERR packet ([`ProxyError::to_err_payload`]). Backend errors never pass through
//! here: they are relayed byte for byte. Every code below is listed in `docs/errors.md`.

use std::io;

/// An error of the proxy's own, with the MySQL code and SQLSTATE a client sees.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("Access denied for user '{user}'@'{host}' (using password: {})", if *.using_password { "YES" } else { "NO" })]
    AccessDenied {
        user: String,
        host: String,
        using_password: bool,
    },

    #[error("Access denied for user '{user}'@'{host}' to database '{db}'")]
    DbAccessDenied {
        user: String,
        host: String,
        db: String,
    },

    #[error("Unknown database '{0}'")]
    UnknownDatabase(String),

    #[error("Too many connections (this proxy allows {0})")]
    TooManyConnections(usize),

    #[error("Unknown command {0:#04x}: {1}")]
    UnknownCommand(u8, &'static str),

    #[error("Got a packet bigger than 'max_allowed_packet' bytes ({0} > {1})")]
    PacketTooLarge(usize, usize),

    #[error("Malformed communication packet: {0}")]
    Malformed(&'static str),

    #[error("Unknown prepared statement handler ({id}) given to {func}")]
    UnknownStatement { id: u32, func: &'static str },

    #[error("No database selected")]
    NoDatabase,

    #[error("Unknown thread id: {0}")]
    NoSuchThread(u32),

    #[error("You are not owner of thread {0}")]
    KillDenied(u32),

    #[error("Connection was killed")]
    ConnectionKilled,

    #[error("data source `{ds}` in room `{room}` is unavailable: {reason}")]
    BackendUnavailable {
        ds: String,
        room: String,
        reason: String,
    },

    #[error("no backend connection to data source `{ds}` in room `{room}` became free within {ms} ms (pool max_size {max})")]
    PoolTimeout {
        ds: String,
        room: String,
        ms: u64,
        max: u32,
    },

    #[error("lost the backend connection to data source `{ds}` in room `{room}` during the statement{}", if *.in_transaction { "; the open transaction was rolled back" } else { "" })]
    BackendLost {
        ds: String,
        room: String,
        in_transaction: bool,
    },

    #[error("{0} is not supported by Rainbow Bridge")]
    Unsupported(String),

    #[error("multi-statement text refused: {0}")]
    MultiStatement(String),

    /// MariaDB's ER_NOT_SUPPORTED_YET: a construct the proxy cannot run across data nodes.
    #[error("This version of Rainbow Bridge doesn't yet support {0}")]
    NotSupportedAcrossNodes(String),

    /// A merge would need more proxy memory than allowed (MariaDB's ER_OUT_OF_SORTMEMORY).
    #[error("{0}")]
    MergeTooLarge(String),

    #[error("cannot merge the results of data nodes: {0}")]
    Merge(String),

    #[error("cannot switch to database `{db}`: the session is pinned to data source `{pinned}` ({reason})")]
    PinnedElsewhere {
        db: String,
        pinned: String,
        reason: &'static str,
    },

    /// A refusal by the multi-active rules (codes 8020–8036, `crate::enforce::code`).
    #[error("{message}")]
    Rule {
        code: u16,
        state: [u8; 5],
        message: String,
    },

    #[error("connection mode `center` is served only in the center room `{center}`; this proxy runs in unit room `{room}`")]
    CenterModeInUnitRoom { room: String, center: String },

    #[error("database `{db}` is a center database, served only in the center room `{center}`; this proxy runs in unit room `{room}`")]
    CenterDatabaseInUnitRoom {
        db: String,
        room: String,
        center: String,
    },
}

impl ProxyError {
    /// MySQL error code and SQLSTATE.
    /// The code of a refusal by the multi-active rules (counted in `rainbow_refusals_total`):
    /// the rules' own and the mode and database-type refusals the session makes itself.
    pub fn refusal_code(&self) -> Option<u16> {
        match self {
            ProxyError::Rule { code, .. } => Some(*code),
            ProxyError::CenterModeInUnitRoom { .. }
            | ProxyError::CenterDatabaseInUnitRoom { .. } => Some(self.code().0),
            _ => None,
        }
    }

    pub fn code(&self) -> (u16, &[u8; 5]) {
        use ProxyError::*;
        match self {
            Rule { code, state, .. } => (*code, state),
            AccessDenied { .. } => (1045, b"28000"),
            DbAccessDenied { .. } => (1044, b"42000"),
            UnknownDatabase(_) => (1049, b"42000"),
            TooManyConnections(_) => (1040, b"08004"),
            UnknownCommand(..) => (1047, b"08S01"),
            PacketTooLarge(..) => (1153, b"08S01"),
            Malformed(_) => (1835, b"HY000"),
            UnknownStatement { .. } => (1243, b"HY000"),
            NoDatabase => (1046, b"3D000"),
            NoSuchThread(_) => (1094, b"HY000"),
            KillDenied(_) => (1095, b"HY000"),
            ConnectionKilled => (1927, b"70100"),
            BackendUnavailable { .. } => (8001, b"HY000"),
            PoolTimeout { .. } => (8002, b"HY000"),
            BackendLost { .. } => (8003, b"08S01"),
            Unsupported(_) => (8010, b"0A000"),
            MultiStatement(_) => (8011, b"0A000"),
            NotSupportedAcrossNodes(_) => (1235, b"42000"),
            MergeTooLarge(_) => (1038, b"HY001"),
            Merge(_) => (8013, b"HY000"),
            PinnedElsewhere { .. } => (8012, b"HY000"),
            CenterModeInUnitRoom { .. } => (8020, b"HY000"),
            CenterDatabaseInUnitRoom { .. } => (8021, b"HY000"),
        }
    }

    /// The ERR packet payload: `0xFF`, code, `#`, SQLSTATE, message.
    pub fn to_err_payload(&self) -> Vec<u8> {
        let (code, state) = self.code();
        let msg = self.to_string();
        let mut p = Vec::with_capacity(9 + msg.len());
        p.push(0xFF);
        p.extend_from_slice(&code.to_le_bytes());
        p.push(b'#');
        p.extend_from_slice(state);
        p.extend_from_slice(msg.as_bytes());
        p
    }
}

/// Why a command could not be completed; decides whether the client connection survives.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Send this error to the client; the connection stays usable.
    #[error(transparent)]
    Client(#[from] ProxyError),
    /// Relay this ERR packet payload from the server unchanged; the connection stays usable.
    #[error("server error {}", crate::backend::err_message(.0))]
    Server(bytes::Bytes),
    /// Send this error, then close the client connection (its session state is gone).
    #[error("fatal: {0}")]
    Fatal(ProxyError),
    /// The client connection failed: close it.
    #[error("client connection: {0}")]
    ClientIo(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_payload_carries_code_state_and_message() {
        let e = ProxyError::UnknownDatabase("nope".into());
        let p = e.to_err_payload();
        assert_eq!(p[0], 0xFF);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1049);
        assert_eq!(&p[3..9], b"#42000");
        assert_eq!(&p[9..], b"Unknown database 'nope'");
    }

    #[test]
    fn proxy_codes_do_not_collide_with_each_other() {
        let all = [
            ProxyError::BackendUnavailable {
                ds: "d".into(),
                room: "A".into(),
                reason: "x".into(),
            },
            ProxyError::PoolTimeout {
                ds: "d".into(),
                room: "A".into(),
                ms: 1,
                max: 1,
            },
            ProxyError::BackendLost {
                ds: "d".into(),
                room: "A".into(),
                in_transaction: true,
            },
            ProxyError::Unsupported("x".into()),
            ProxyError::MultiStatement("x".into()),
            ProxyError::PinnedElsewhere {
                db: "d".into(),
                pinned: "p".into(),
                reason: "r",
            },
            ProxyError::CenterModeInUnitRoom {
                room: "B".into(),
                center: "A".into(),
            },
            ProxyError::CenterDatabaseInUnitRoom {
                db: "d".into(),
                room: "B".into(),
                center: "A".into(),
            },
        ];
        let mut codes: Vec<u16> = all.iter().map(|e| e.code().0).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        assert!(all[2].to_string().ends_with("rolled back"));
    }
}
