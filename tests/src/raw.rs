//! A minimal protocol client for what real drivers do but mysql_async cannot be told to do:
//! start with caching_sha2_password, re-execute a prepared statement without re-sending
//! parameter types, send non-UTF-8 SQL, send arbitrary command bytes, vanish mid-transaction.
//! Classic EOF framing (no CLIENT_DEPRECATE_EOF), like libmysqlclient-era drivers.

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use mysql_common::scramble::scramble_native;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    pub server_version: String,
    pub connection_id: u32,
    /// The salt of the greeting (COM_CHANGE_USER is scrambled with it).
    pub salt: Vec<u8>,
}

/// A server error: code, SQLSTATE, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerErr {
    pub code: u16,
    pub state: String,
    pub message: String,
}

pub fn parse_err(p: &[u8]) -> Option<ServerErr> {
    if p.first() != Some(&0xFF) || p.len() < 9 {
        return None;
    }
    Some(ServerErr {
        code: u16::from_le_bytes([p[1], p[2]]),
        state: String::from_utf8_lossy(&p[4..9]).into_owned(),
        message: String::from_utf8_lossy(&p[9..]).into_owned(),
    })
}

/// A text result: rows of optional byte values, or OK, or an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok { affected: u64, status: u16 },
    Rows(Vec<Vec<Option<Vec<u8>>>>),
    Err(ServerErr),
}

fn lenenc(buf: &[u8]) -> (u64, usize) {
    match buf[0] {
        0xFC => (u16::from_le_bytes([buf[1], buf[2]]) as u64, 3),
        0xFD => (u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as u64, 4),
        0xFE => (u64::from_le_bytes(buf[1..9].try_into().unwrap()), 9),
        n => (n as u64, 1),
    }
}

impl Raw {
    /// Connects and authenticates; `plugin` is what the client claims to start with.
    pub async fn connect(
        port: u16,
        user: &str,
        password: &str,
        db: Option<&str>,
        plugin: &str,
    ) -> Result<Raw, ServerErr> {
        Self::connect_with(port, user, password, db, plugin, None, false).await
    }

    /// [`Raw::connect`] with a handshake collation id and optionally CLIENT_MULTI_STATEMENTS.
    pub async fn connect_with(
        port: u16,
        user: &str,
        password: &str,
        db: Option<&str>,
        plugin: &str,
        collation: Option<u8>,
        multi_statements: bool,
    ) -> Result<Raw, ServerErr> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        let (_, greeting) = read_packet(&mut stream).await;
        let hs: HandshakePacket<'_> = ParseBuf(&greeting).parse(()).expect("greeting");
        let server_version = hs.server_version_str().into_owned();
        let connection_id = hs.connection_id();
        let nonce = hs.nonce();
        let (plugin_id, first_token) = if plugin == "caching_sha2_password" {
            let t = mysql_common::scramble::scramble_sha256(&nonce, password.as_bytes())
                .map(|t| t.to_vec());
            (AuthPlugin::CachingSha2Password, t.unwrap_or_default())
        } else {
            let t = scramble_native(&nonce, password.as_bytes()).map(|t| t.to_vec());
            (AuthPlugin::MysqlNativePassword, t.unwrap_or_default())
        };
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS;
        let caps = if multi_statements {
            caps | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        } else {
            caps
        };
        let resp = HandshakeResponse::new(
            Some(first_token),
            (5, 5, 5),
            Some(user.as_bytes()),
            db.map(str::as_bytes),
            Some(plugin_id),
            caps,
            None,
            16 << 20,
        );
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        if let Some(c) = collation {
            buf[8] = c; // capabilities (4), max packet size (4), then the collation id
        }
        write_packet(&mut stream, 1, &buf).await;
        loop {
            let (seq, p) = read_packet(&mut stream).await;
            match p.first() {
                Some(0x00) => break,
                Some(0xFF) => return Err(parse_err(&p).unwrap()),
                Some(0xFE) => {
                    // Auth switch: plugin name NUL, then the salt.
                    let name_end = p.iter().position(|b| *b == 0).unwrap();
                    assert_eq!(
                        &p[1..name_end],
                        b"mysql_native_password",
                        "switch to an unexpected plugin"
                    );
                    let salt = &p[name_end + 1..name_end + 21];
                    let t = scramble_native(salt, password.as_bytes())
                        .map(|t| t.to_vec())
                        .unwrap_or_default();
                    write_packet(&mut stream, seq + 1, &t).await;
                }
                other => panic!("unexpected auth packet {other:?}"),
            }
        }
        Ok(Raw {
            stream,
            server_version,
            connection_id,
            salt: nonce,
        })
    }

    /// Sends one command packet (sequence 0).
    pub async fn send(&mut self, payload: &[u8]) {
        write_packet(&mut self.stream, 0, payload).await;
    }

    pub async fn read(&mut self) -> Vec<u8> {
        read_packet(&mut self.stream).await.1
    }

    /// Reads a text or binary result (classic EOF framing).
    pub async fn read_reply(&mut self, binary: bool, cols_known: Option<usize>) -> Reply {
        let first = self.read().await;
        match first[0] {
            0x00 if cols_known.is_none() => {
                let (affected, n) = lenenc(&first[1..]);
                let (_, m) = lenenc(&first[1 + n..]);
                let at = 1 + n + m;
                return Reply::Ok {
                    affected,
                    status: u16::from_le_bytes([first[at], first[at + 1]]),
                };
            }
            0xFF => return Reply::Err(parse_err(&first).unwrap()),
            _ => {}
        }
        let ncols = lenenc(&first).0 as usize;
        for _ in 0..ncols {
            self.read().await;
        }
        assert_eq!(self.read().await[0], 0xFE, "EOF after column definitions");
        let mut rows = Vec::new();
        loop {
            let p = self.read().await;
            if p[0] == 0xFE && p.len() < 9 {
                break;
            }
            if p[0] == 0xFF {
                return Reply::Err(parse_err(&p).unwrap());
            }
            // Binary rows: 0x00, NULL bitmap (offset 2), then values; tests select only
            // string-typed columns, which are length-encoded like text values.
            let bitmap = (ncols + 7 + 2) / 8;
            let mut at = if binary { 1 + bitmap } else { 0 };
            let mut row = Vec::new();
            for i in 0..ncols {
                let null = if binary {
                    p[1 + (i + 2) / 8] & (1 << ((i + 2) % 8)) != 0
                } else {
                    p[at] == 0xFB
                };
                if binary && null {
                    row.push(None);
                } else if null {
                    row.push(None);
                    at += 1;
                } else {
                    let (len, n) = lenenc(&p[at..]);
                    row.push(Some(p[at + n..at + n + len as usize].to_vec()));
                    at += n + len as usize;
                }
            }
            rows.push(row);
        }
        Reply::Rows(rows)
    }

    /// COM_CHANGE_USER with mysql_native_password against the connection's salt.
    pub async fn change_user(&mut self, user: &str, password: &str, db: &str) -> Reply {
        let token = scramble_native(&self.salt, password.as_bytes())
            .map(|t| t.to_vec())
            .unwrap_or_default();
        let mut cmd = vec![0x11];
        cmd.extend_from_slice(user.as_bytes());
        cmd.push(0);
        cmd.push(token.len() as u8);
        cmd.extend_from_slice(&token);
        cmd.extend_from_slice(db.as_bytes());
        cmd.push(0);
        self.send(&cmd).await;
        self.read_reply(false, None).await
    }

    pub async fn query(&mut self, sql: &[u8]) -> Reply {
        let mut p = vec![0x03];
        p.extend_from_slice(sql);
        self.send(&p).await;
        self.read_reply(false, None).await
    }

    /// COM_STMT_PREPARE; returns (statement id, parameter count).
    pub async fn prepare(&mut self, sql: &str) -> Result<(u32, u16), ServerErr> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        self.send(&p).await;
        let ok = self.read().await;
        if ok[0] == 0xFF {
            return Err(parse_err(&ok).unwrap());
        }
        let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
        let cols = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        for section in [params, cols] {
            if section > 0 {
                for _ in 0..section {
                    self.read().await;
                }
                assert_eq!(self.read().await[0], 0xFE);
            }
        }
        Ok((id, params))
    }

    /// COM_STMT_EXECUTE with string parameters; `send_types` controls new_params_bound_flag.
    pub async fn execute(&mut self, id: u32, params: &[&str], send_types: bool) -> Reply {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        if !params.is_empty() {
            p.extend(std::iter::repeat_n(0u8, params.len().div_ceil(8)));
            p.push(send_types as u8);
            if send_types {
                for _ in params {
                    p.extend_from_slice(&[0xFD, 0]); // MYSQL_TYPE_VAR_STRING
                }
            }
            for v in params {
                p.push(v.len() as u8);
                p.extend_from_slice(v.as_bytes());
            }
        }
        self.send(&p).await;
        self.read_reply(true, Some(0)).await
    }
}

pub async fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.expect("read packet header");
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.expect("read packet payload");
    (h[3], p)
}

pub async fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let mut b = Vec::with_capacity(4 + payload.len());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    b.push(seq);
    b.extend_from_slice(payload);
    s.write_all(&b).await.expect("write packet");
}
