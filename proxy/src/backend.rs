//! One connection from the proxy to a MariaDB/MySQL data source: handshake and authentication
//! (mysql_common packet types), internal command exchanges, and the relay that copies a
//! response's packets to the client without decoding rows.
//!
//! Invariants: `vars` and `schema` describe the server-side session exactly (every change goes
//! through [`BackendConn::set_vars`] or [`BackendConn::init_db`]); a connection whose response
//! was not read to the end is marked `broken` and never reused.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use mysql_common::scramble::scramble_native;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::packet::{PacketIo, MAX_PAYLOAD};
use crate::response::{BadResponse, Outcome, ResponseKind, Tracker};

/// Where and as whom to connect: one configured data source.
#[derive(Debug)]
pub struct Target {
    pub ds: String,
    pub room: String,
    pub host: String,
    pub port: u16,
    pub schema: String,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
}

/// Capabilities every backend connection uses, whatever the client asked for.
pub const BASE_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_LONG_FLAG.bits()
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB.bits()
        | CapabilityFlags::CLIENT_PROTOCOL_41.bits()
        | CapabilityFlags::CLIENT_TRANSACTIONS.bits()
        | CapabilityFlags::CLIENT_SECURE_CONNECTION.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits(),
);

/// Client capabilities that change what the server sends or accepts, so a backend connection
/// must carry exactly the client's choice of them for its packets to be relayed unchanged.
pub const PROFILE_CAPS: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    crate::auth::EXT_METADATA.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS.bits(),
);

/// The session variables a fresh connection starts with (the handshake uses utf8mb4_general_ci).
pub fn initial_vars() -> BTreeMap<String, String> {
    charset_vars("utf8mb4", "utf8mb4_general_ci")
}

/// Not a server variable: the collation MariaDB labels result columns with. `SET NAMES cs
/// COLLATE co` makes it `co` while `@@character_set_results` still reads `cs`; assigning
/// `character_set_results` makes it that charset's default. Tracked (as a quoted collation name)
/// so a pooled connection never hands one session's column collations to the next; absent while
/// `character_set_results` is NULL.
pub const RESULTS_COLLATION: &str = "(results collation)";

/// The four variables `SET NAMES charset COLLATE collation` sets, as tracked literals, and the
/// results collation it sets.
pub fn charset_vars(charset: &str, collation: &str) -> BTreeMap<String, String> {
    let q = |s: &str| format!("'{s}'");
    BTreeMap::from([
        ("character_set_client".to_string(), q(charset)),
        ("character_set_connection".to_string(), q(charset)),
        ("character_set_results".to_string(), q(charset)),
        ("collation_connection".to_string(), q(collation)),
        (RESULTS_COLLATION.to_string(), q(collation)),
    ])
}

/// Failure to open or use a backend connection.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("server refused the login: {0}")]
    Refused(String),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error(transparent)]
    Protocol(#[from] BadResponse),
}

/// A complete response read by the proxy for itself.
#[derive(Debug)]
pub struct Response {
    pub packets: Vec<Bytes>,
    pub outcome: Outcome,
}

impl Response {
    /// The ERR packet payload if the response is an error.
    pub fn error_packet(&self) -> Option<&Bytes> {
        self.outcome.error.and_then(|_| self.packets.last())
    }
}

/// Why a relay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed; `sent` says whether part of the response already reached the client.
    #[error("backend: {source}")]
    Backend { sent: bool, source: BackendError },
    /// Writing to the client failed.
    #[error("client: {0}")]
    Client(io::Error),
}

pub struct BackendConn {
    io: PacketIo,
    pub thread_id: u32,
    pub server_version: String,
    pub caps: CapabilityFlags,
    /// Current schema on the server.
    pub schema: String,
    /// Session variables as the server has them: name → SQL literal.
    pub vars: BTreeMap<String, String>,
    /// Statements prepared on this connection for the current schema and settings: SQL → id.
    pub stmts: HashMap<Bytes, BackendStmt>,
    /// What `LAST_INSERT_ID()` returns on this connection.
    pub last_insert_id: u64,
    /// Set when the connection may not be reused (I/O error, response not fully read, or session
    /// state that cannot be reset); the pool drops it.
    pub broken: bool,
}

/// Statements kept prepared per backend connection (MariaDB allows 16382 per server).
pub const MAX_STATEMENTS: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct BackendStmt {
    pub id: u32,
    pub params: u16,
}

impl BackendConn {
    /// Opens and authenticates a connection with the given client-profile capabilities.
    pub async fn connect(
        target: &Target,
        profile: CapabilityFlags,
    ) -> Result<BackendConn, BackendError> {
        let fut = Self::connect_inner(target, profile);
        tokio::time::timeout(target.connect_timeout, fut)
            .await
            .map_err(|_| BackendError::Timeout(target.connect_timeout))?
    }

    async fn connect_inner(
        target: &Target,
        profile: CapabilityFlags,
    ) -> Result<BackendConn, BackendError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        let mut io = PacketIo::new(stream, crate::packet::BACKEND_CHUNK);
        let greeting = read(&mut io).await?;
        if greeting.payload.first() == Some(&0xFF) {
            return Err(BackendError::Refused(err_message(&greeting.payload)));
        }
        let hs: HandshakePacket<'_> = ParseBuf(&greeting.payload)
            .parse(())
            .map_err(|e| BackendError::Handshake(format!("bad greeting: {e}")))?;
        let ext = profile.contains(crate::auth::EXT_METADATA);
        let mut wanted = BASE_CAPS | (profile & (PROFILE_CAPS - crate::auth::EXT_METADATA));
        // MariaDB clears bit 0 (CLIENT_LONG_PASSWORD, "CLIENT_MYSQL") to announce itself.
        let missing = wanted - hs.capabilities() - CapabilityFlags::CLIENT_LONG_PASSWORD;
        if !missing.is_empty() {
            return Err(BackendError::Handshake(format!(
                "server lacks capabilities {missing:?}"
            )));
        }
        let mariadb = if ext {
            let m = mysql_common::constants::MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;
            if hs
                .capabilities()
                .contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
                || !hs.mariadb_ext_capabilities().contains(m)
            {
                return Err(BackendError::Handshake(
                    "the client asked for MariaDB extended metadata, which the server does not \
                     offer (MariaDB 10.5 or later does)"
                        .into(),
                ));
            }
            // The server reads MariaDB's capabilities only from a client with bit 0 cleared.
            wanted -= CapabilityFlags::CLIENT_LONG_PASSWORD;
            m
        } else {
            mysql_common::constants::MariadbCapabilities::empty()
        };
        let nonce = hs.nonce();
        let token = scramble_native(&nonce, target.password.as_bytes());
        let resp = HandshakeResponse::new(
            Some(token.map(|t| t.to_vec()).unwrap_or_default()),
            hs.server_version_parsed().unwrap_or((5, 5, 5)),
            Some(target.user.as_bytes()),
            Some(target.schema.as_bytes()),
            Some(AuthPlugin::MysqlNativePassword),
            wanted,
            None,
            0x4000_0000,
        )
        .with_mariadb_ext_capabilities(mariadb);
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        let mut seq = greeting.seq.wrapping_add(1);
        io.send(seq, &buf).await?;
        loop {
            let p = read(&mut io).await?;
            seq = p.seq.wrapping_add(1);
            match p.payload.first() {
                Some(0x00) => break,
                Some(0xFF) => return Err(BackendError::Refused(err_message(&p.payload))),
                Some(0xFE) => {
                    let switch: AuthSwitchRequest<'_> = ParseBuf(&p.payload)
                        .parse(())
                        .map_err(|e| BackendError::Handshake(format!("bad auth switch: {e}")))?;
                    if switch.auth_plugin() != AuthPlugin::MysqlNativePassword {
                        return Err(BackendError::Handshake(format!(
                            "server asks for auth plugin {:?}; the proxy's backend users must use mysql_native_password",
                            String::from_utf8_lossy(switch.auth_plugin().as_bytes())
                        )));
                    }
                    let data = switch.plugin_data();
                    let salt = &data[..data.len().min(20)];
                    let token = scramble_native(salt, target.password.as_bytes());
                    io.send(seq, token.as_ref().map_or(&[][..], |t| &t[..]))
                        .await?;
                }
                _ => {
                    return Err(BackendError::Handshake(
                        "unexpected packet during authentication".into(),
                    ))
                }
            }
        }
        Ok(BackendConn {
            io,
            thread_id: hs.connection_id(),
            server_version: hs.server_version_str().into_owned(),
            caps: wanted,
            schema: target.schema.clone(),
            vars: initial_vars(),
            stmts: HashMap::new(),
            last_insert_id: 0,
            broken: false,
        })
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Sends a command and reads its whole response for the proxy's own use.
    pub async fn exchange(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<Response, BackendError> {
        let r = self.exchange_inner(payload, kind).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn exchange_inner(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<Response, BackendError> {
        self.io.send(0, payload).await?;
        let mut tracker = Tracker::new(kind, self.deprecate_eof());
        let mut packets = Vec::new();
        while !tracker.is_done() {
            let p = read(&mut self.io).await?;
            tracker.feed_logical(&p.payload)?;
            packets.push(p.payload);
        }
        self.note(&tracker.outcome);
        Ok(Response {
            packets,
            outcome: tracker.outcome,
        })
    }

    /// Sends a command whose response the caller reads with [`BackendConn::read_payload`]
    /// (several may be sent before reading: the server answers them in order).
    pub async fn send_command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.send_only(payload).await
    }

    /// The next packet of a response (multi-packet payloads joined).
    pub async fn read_payload(&mut self) -> Result<Bytes, BackendError> {
        let r = read(&mut self.io).await;
        if r.is_err() {
            self.broken = true;
        }
        r.map(|p| p.payload)
    }

    /// Sends a command that has no response (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    pub async fn send_only(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        let r = self.io.send(0, payload).await;
        if r.is_err() {
            self.broken = true;
        }
        r.map(|_| ()).map_err(Into::into)
    }

    /// Sends the client's command packets (already framed, sequence ids included) and copies the
    /// response to `client` packet by packet as it arrives, never decoding rows. `seq_shift` is
    /// added to every response sequence id (0 unless the proxy re-framed the command).
    pub async fn relay(
        &mut self,
        command: &[u8],
        kind: ResponseKind,
        client: &mut PacketIo,
        seq_shift: u8,
    ) -> Result<Outcome, RelayError> {
        let r = self.relay_inner(command, kind, client, seq_shift).await;
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    async fn relay_inner(
        &mut self,
        command: &[u8],
        kind: ResponseKind,
        client: &mut PacketIo,
        seq_shift: u8,
    ) -> Result<Outcome, RelayError> {
        let backend = |sent: bool| {
            move |e: io::Error| RelayError::Backend {
                sent,
                source: e.into(),
            }
        };
        self.io
            .stream
            .write_all(command)
            .await
            .map_err(backend(false))?;
        let mut tracker = Tracker::new(kind, self.deprecate_eof());
        let mut sent = false;
        // Bytes of `rbuf` already classified but not yet written to the client.
        let mut scanned = 0usize;
        loop {
            while !tracker.is_done() && self.io.rbuf.len() >= scanned + 4 {
                let buf = &mut self.io.rbuf[..];
                let len = (buf[scanned] as usize)
                    | (buf[scanned + 1] as usize) << 8
                    | (buf[scanned + 2] as usize) << 16;
                if buf.len() < scanned + 4 + len {
                    break;
                }
                // The proxy sent the command in a different number of packets than the client
                // did: renumber the response so the client sees the sequence it expects.
                buf[scanned + 3] = buf[scanned + 3].wrapping_add(seq_shift);
                tracker
                    .feed(&buf[scanned + 4..scanned + 4 + len])
                    .map_err(|e| RelayError::Backend {
                        sent: sent || scanned > 0,
                        source: e.into(),
                    })?;
                scanned += 4 + len;
            }
            let done = tracker.is_done();
            // Forward every complete packet at once: one write per read in the common case.
            let forward = scanned;
            if forward > 0 {
                client
                    .stream
                    .write_all(&self.io.rbuf[..forward])
                    .await
                    .map_err(RelayError::Client)?;
                self.io.rbuf.advance(forward);
                scanned = 0;
                sent = true;
            }
            if done {
                break;
            }
            let need = self.pending_packet_len();
            if let Some(n) = need {
                self.io.rbuf.reserve(n.saturating_sub(self.io.rbuf.len()));
            }
            match self.io.fill().await {
                Ok(0) => {
                    return Err(RelayError::Backend {
                        sent,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "backend closed the connection",
                        )
                        .into(),
                    })
                }
                Ok(_) => {}
                Err(e) => return Err(backend(sent)(e)),
            }
        }
        self.note(&tracker.outcome);
        Ok(tracker.outcome)
    }

    /// Total size of the packet at the start of `rbuf`, when its header has arrived.
    fn pending_packet_len(&self) -> Option<usize> {
        let b = &self.io.rbuf;
        (b.len() >= 4).then(|| 4 + ((b[0] as usize) | (b[1] as usize) << 8 | (b[2] as usize) << 16))
    }

    fn note(&mut self, o: &Outcome) {
        if o.last_insert_id != 0 {
            self.last_insert_id = o.last_insert_id;
        }
    }

    /// Runs a statement the proxy issues itself; an ERR from the server comes back as `Err(packet)`.
    pub async fn query(&mut self, sql: &str) -> Result<Result<Response, Bytes>, BackendError> {
        let mut p = Vec::with_capacity(1 + sql.len());
        p.push(0x03);
        p.extend_from_slice(sql.as_bytes());
        let r = self.exchange(&p, ResponseKind::ResultSets).await?;
        Ok(match r.error_packet() {
            Some(err) => Err(err.clone()),
            None => Ok(r),
        })
    }

    /// Changes the current schema; on success the prepared-statement cache is dropped because
    /// statements resolve table names at prepare time.
    pub async fn init_db(&mut self, schema: &str) -> Result<Result<(), Bytes>, BackendError> {
        let mut p = Vec::with_capacity(1 + schema.len());
        p.push(0x02);
        p.extend_from_slice(schema.as_bytes());
        let r = self.exchange(&p, ResponseKind::OkOrErr).await?;
        if let Some(err) = r.error_packet() {
            return Ok(Err(err.clone()));
        }
        self.schema = schema.to_string();
        self.close_statements().await?;
        Ok(Ok(()))
    }

    /// Brings the server's session variables to `wanted` with one SET, if they differ.
    pub async fn set_vars(
        &mut self,
        wanted: &BTreeMap<String, String>,
    ) -> Result<Result<(), Bytes>, BackendError> {
        if &self.vars == wanted {
            return Ok(Ok(()));
        }
        // The results collation only `SET NAMES … COLLATE …` sets: first, then the rest
        // against what it left.
        let before = self.vars.clone();
        let parse_affecting = ["sql_mode", "character_set_client", "collation_connection"]
            .iter()
            .any(|v| before.get(*v) != wanted.get(*v));
        let mut have = self.vars.clone();
        if wanted.get(RESULTS_COLLATION) != have.get(RESULTS_COLLATION) {
            if let (Some(co), Some(cs)) = (
                wanted.get(RESULTS_COLLATION),
                wanted.get("character_set_results"),
            ) {
                if let Err(err) = self.query(&format!("SET NAMES {cs} COLLATE {co}")).await? {
                    return Ok(Err(err));
                }
                for (k, v) in charset_vars(cs.trim_matches('\''), co.trim_matches('\'')) {
                    have.insert(k, v);
                }
                self.vars = have.clone();
            }
        }
        let mut sql = String::from("SET ");
        let mut first = true;
        let mut push = |sql: &mut String, name: &str, value: &str| {
            if !std::mem::take(&mut first) {
                sql.push_str(", ");
            }
            sql.push_str("@@session.");
            sql.push_str(name);
            sql.push_str(" = ");
            sql.push_str(value);
        };
        for (name, value) in wanted {
            if name != RESULTS_COLLATION && have.get(name) != Some(value) {
                push(&mut sql, name, value);
            }
        }
        for name in have.keys() {
            if name != RESULTS_COLLATION && !wanted.contains_key(name) {
                push(&mut sql, name, "DEFAULT");
            }
        }
        let done = if first {
            // SET NAMES did it all.
            Ok(())
        } else {
            self.query(&sql).await?.map(|_| ())
        };
        match done {
            Ok(()) => {
                self.vars = wanted.clone();
                if parse_affecting {
                    self.close_statements().await?;
                }
                Ok(Ok(()))
            }
            Err(err) => {
                // The SET failed as a whole: MariaDB applies none of a failed SET's assignments.
                Ok(Err(err))
            }
        }
    }

    /// Closes every statement prepared on this connection.
    pub async fn close_statements(&mut self) -> Result<(), BackendError> {
        let ids: Vec<u32> = self.stmts.drain().map(|(_, s)| s.id).collect();
        for id in ids {
            self.close_statement(id).await?;
        }
        Ok(())
    }

    /// Records a statement prepared on this connection. A statement it replaces is closed on the
    /// server, and past [`MAX_STATEMENTS`] all others are closed, so a client that prepares
    /// endlessly never exhausts the server's `max_prepared_stmt_count`.
    /// The id of `sql` prepared on this connection, preparing (and remembering) it first if
    /// needed; `Ok(Err(packet))` when the server refuses to prepare it.
    pub async fn statement_id(&mut self, sql: &Bytes) -> Result<Result<u32, Bytes>, BackendError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(Ok(s.id));
        }
        let mut cmd = Vec::with_capacity(1 + sql.len());
        cmd.push(0x16); // COM_STMT_PREPARE
        cmd.extend_from_slice(sql);
        let r = self.exchange(&cmd, ResponseKind::Prepare).await?;
        match r.outcome.prepared {
            Some((id, _, params)) => {
                self.remember_statement(sql.clone(), BackendStmt { id, params })
                    .await?;
                Ok(Ok(id))
            }
            None => Ok(Err(r.error_packet().cloned().unwrap_or_default())),
        }
    }

    pub async fn remember_statement(
        &mut self,
        sql: Bytes,
        stmt: BackendStmt,
    ) -> Result<(), BackendError> {
        if let Some(old) = self.stmts.insert(sql.clone(), stmt) {
            if old.id != stmt.id {
                self.close_statement(old.id).await?;
            }
        }
        if self.stmts.len() > MAX_STATEMENTS {
            let others: Vec<u32> = self
                .stmts
                .iter()
                .filter(|(k, _)| **k != sql)
                .map(|(_, s)| s.id)
                .collect();
            self.stmts.retain(|k, _| *k == sql);
            for id in others {
                self.close_statement(id).await?;
            }
        }
        Ok(())
    }

    async fn close_statement(&mut self, id: u32) -> Result<(), BackendError> {
        let mut p = [0x19, 0, 0, 0, 0];
        p[1..5].copy_from_slice(&id.to_le_bytes());
        self.send_only(&p).await
    }

    /// Sends COM_PING and waits for the OK.
    pub async fn ping(&mut self) -> Result<(), BackendError> {
        let r = self.exchange(&[0x0E], ResponseKind::OkOrErr).await?;
        match r.error_packet() {
            Some(e) => Err(BackendError::Refused(err_message(e))),
            None => Ok(()),
        }
    }
}

async fn read(io: &mut PacketIo) -> Result<crate::packet::Packet, BackendError> {
    match io.read_packet(usize::MAX).await? {
        Some(p) => Ok(p),
        None => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the connection",
        )
        .into()),
    }
}

/// The message text of an ERR packet, for logs and proxy errors.
pub fn err_message(payload: &[u8]) -> String {
    let code = u16::from_le_bytes([
        payload.get(1).copied().unwrap_or(0),
        payload.get(2).copied().unwrap_or(0),
    ]);
    let text = if payload.get(3) == Some(&b'#') {
        payload.get(9..)
    } else {
        payload.get(3..)
    };
    format!(
        "{code}: {}",
        String::from_utf8_lossy(text.unwrap_or_default())
    )
}

/// Splits a (possibly multi-packet) command for forwarding: returns the framed bytes.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4 + 4 * (payload.len() / MAX_PAYLOAD));
    frame_into(&mut out, seq, payload);
    out
}

/// [`frame`] appending to `out`.
pub fn frame_into(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    out.reserve(payload.len() + 4 + 4 * (payload.len() / MAX_PAYLOAD));
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return;
        }
    }
}

/// Shared, immutable description of a data source, for pools.
pub type SharedTarget = Arc<Target>;
