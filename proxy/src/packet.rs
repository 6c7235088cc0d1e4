//! MySQL packet framing over a TCP stream: 3-byte little-endian length, 1-byte sequence id,
//! payload. Payloads of 16 MiB - 1 or more are split into several packets.
//!
//! Invariants: the read buffer only ever holds bytes received from the peer and not yet
//! consumed; [`PacketIo::read_packet`] hands out payloads without copying (a `BytesMut` split),
//! and the relay path reads complete raw packets straight out of [`PacketIo::rbuf`].

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest payload carried by one physical packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Read size of a backend connection: result sets stream through in 64 KiB reads.
pub const BACKEND_CHUNK: usize = 64 * 1024;
/// Read size of a client connection: commands are small, and an idle client should cost little
/// (10 000 idle clients hold 10 000 of these). A larger packet grows the buffer to its size.
pub const CLIENT_CHUNK: usize = 4 * 1024;

/// One logical packet: the sequence id of its first physical packet and the joined payload.
#[derive(Debug)]
pub struct Packet {
    pub seq: u8,
    /// Sequence id of its last physical packet (differs from `seq` for split payloads).
    pub last_seq: u8,
    pub payload: Bytes,
}

/// A framed connection: the socket, a read buffer and a write buffer.
pub struct PacketIo {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// How much room a read asks for ([`BACKEND_CHUNK`] or [`CLIENT_CHUNK`]).
    chunk: usize,
    /// A packet larger than four chunks went through `rbuf` since the last [`Self::shrink_idle`]
    /// (its allocation is still behind `rbuf`, whose own capacity no longer shows it).
    grown: bool,
}

impl PacketIo {
    /// A connection whose reads ask for `chunk` bytes of room; the write buffer starts empty.
    pub fn new(stream: TcpStream, chunk: usize) -> Self {
        PacketIo {
            stream,
            rbuf: BytesMut::with_capacity(chunk),
            wbuf: BytesMut::new(),
            chunk,
            grown: false,
        }
    }

    /// Reads more bytes into `rbuf`; `Ok(0)` means the peer closed the connection.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < self.chunk / 4 {
            self.rbuf.reserve(self.chunk);
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Between commands: gives back buffers a large packet grew beyond four chunks, so that
    /// a client that once sent or received a big packet does not keep its memory while idle.
    pub fn shrink_idle(&mut self) {
        let limit = 4 * self.chunk;
        if self.rbuf.is_empty() && (self.grown || self.rbuf.capacity() > limit) {
            self.rbuf = BytesMut::with_capacity(self.chunk);
            self.grown = false;
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > limit {
            self.wbuf = BytesMut::new();
        }
    }

    /// Reads one logical packet, joining split payloads; refuses payloads over `max_len`.
    /// `Ok(None)` means the peer closed the connection cleanly between packets.
    ///
    /// Cancel-safe: nothing is consumed from `rbuf` until the whole logical packet is there, so
    /// dropping the future (in a `select!`) loses no bytes.
    pub async fn read_packet(&mut self, max_len: usize) -> io::Result<Option<Packet>> {
        loop {
            match self.complete_packet(max_len)? {
                Ok((parts, total)) => return Ok(Some(self.take_packet(parts, total))),
                Err(need) => {
                    self.rbuf.reserve(need.saturating_sub(self.rbuf.len()));
                    if self.fill().await? == 0 {
                        return if self.rbuf.is_empty() {
                            Ok(None)
                        } else {
                            Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "connection closed inside a packet",
                            ))
                        };
                    }
                }
            }
        }
    }

    /// Whether `rbuf` starts with a complete logical packet: `Ok((physical packets, payload
    /// length))`, or `Err(bytes needed)` to hold what has been announced so far.
    fn complete_packet(&self, max_len: usize) -> io::Result<Result<(usize, usize), usize>> {
        let b = &self.rbuf;
        let (mut at, mut parts, mut total) = (0usize, 0usize, 0usize);
        loop {
            if b.len() < at + 4 {
                return Ok(Err(at + 4));
            }
            let len = (b[at] as usize) | (b[at + 1] as usize) << 8 | (b[at + 2] as usize) << 16;
            total += len;
            if total > max_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    PacketTooLarge {
                        len: total,
                        max: max_len,
                    },
                ));
            }
            at += 4 + len;
            parts += 1;
            if b.len() < at {
                return Ok(Err(at));
            }
            if len < MAX_PAYLOAD {
                return Ok(Ok((parts, total)));
            }
        }
    }

    fn take_packet(&mut self, parts: usize, total: usize) -> Packet {
        if total > 4 * self.chunk {
            self.grown = true;
        }
        let seq = self.rbuf[3];
        if parts == 1 {
            self.rbuf.advance(4);
            let payload = self.rbuf.split_to(total).freeze();
            return Packet {
                seq,
                last_seq: seq,
                payload,
            };
        }
        let mut joined = BytesMut::with_capacity(total);
        let mut last_seq = seq;
        for _ in 0..parts {
            let len = (self.rbuf[0] as usize)
                | (self.rbuf[1] as usize) << 8
                | (self.rbuf[2] as usize) << 16;
            last_seq = self.rbuf[3];
            self.rbuf.advance(4);
            joined.extend_from_slice(&self.rbuf[..len]);
            self.rbuf.advance(len);
        }
        Packet {
            seq,
            last_seq,
            payload: joined.freeze(),
        }
    }

    /// Appends `payload` to the write buffer as packets starting at `seq`; returns the next seq.
    pub fn queue(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            self.wbuf.reserve(4 + n);
            self.wbuf.put_uint_le(n as u64, 3);
            self.wbuf.put_u8(seq);
            self.wbuf.extend_from_slice(&rest[..n]);
            seq = seq.wrapping_add(1);
            rest = &rest[n..];
            // A payload of exactly a multiple of MAX_PAYLOAD ends with an empty packet.
            if n < MAX_PAYLOAD {
                return seq;
            }
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queues one payload and writes it out.
    pub async fn send(&mut self, seq: u8, payload: &[u8]) -> io::Result<u8> {
        let next = self.queue(seq, payload);
        self.flush().await?;
        Ok(next)
    }
}

/// A packet larger than the configured limit (MySQL error 1153).
#[derive(Debug, thiserror::Error)]
#[error("got a packet of {len} bytes, bigger than max_allowed_packet ({max} bytes)")]
pub struct PacketTooLarge {
    pub len: usize,
    pub max: usize,
}

/// Length of the length-encoded integer at the start of `buf` and its value.
pub fn lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let (n, width) = match first {
        0..=0xFA => return Some((first as u64, 1)),
        0xFC => (2, 3),
        0xFD => (3, 4),
        0xFE => (8, 9),
        _ => return None,
    };
    let bytes = buf.get(1..1 + n)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= (*b as u64) << (8 * i);
    }
    Some((v, width))
}

/// A column definition packet parsed, also in MariaDB's extended-metadata form (a connection
/// with MARIADB_CLIENT_EXTENDED_METADATA has one more length-encoded string after `org_name`:
/// the column's extended type info, e.g. `json`). `mysql_common` reads only the plain form, so
/// that string is cut out first; it is recognised by what follows the six names: the plain form
/// ends with `0x0C` and 12 fixed bytes.
pub fn column_def(def: &[u8]) -> Option<mysql_common::packets::Column> {
    use mysql_common::proto::MyDeserialize;
    let mut at = 0;
    for _ in 0..6 {
        let (len, w) = lenenc_int(def.get(at..)?)?;
        at += w + usize::try_from(len).ok()?;
    }
    let rest = def.get(at..)?;
    let plain = |d: &[u8]| {
        let mut buf = mysql_common::io::ParseBuf(d);
        mysql_common::packets::Column::deserialize((), &mut buf).ok()
    };
    if rest.len() == 13 && rest[0] == 0x0C {
        return plain(def);
    }
    let (len, w) = lenenc_int(rest)?;
    let skip = w + usize::try_from(len).ok()?;
    let fixed = rest.get(skip..)?;
    if fixed.len() < 13 || fixed[0] != 0x0C {
        return None;
    }
    let mut v = Vec::with_capacity(def.len() - skip);
    v.extend_from_slice(&def[..at]);
    v.extend_from_slice(fixed);
    plain(&v)
}

pub fn put_lenenc_int(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => buf.push(v as u8),
        0xFB..=0xFFFF => {
            buf.push(0xFC);
            buf.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            buf.push(0xFD);
            buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xFE);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod column_tests {
    use super::*;

    /// A column definition: six names, the extended info when given, the fixed fields.
    fn def(ext: Option<&[u8]>) -> Vec<u8> {
        let mut v = Vec::new();
        for name in [&b"def"[..], b"db", b"t", b"t", b"j", b"j"] {
            put_lenenc_int(&mut v, name.len() as u64);
            v.extend_from_slice(name);
        }
        if let Some(e) = ext {
            put_lenenc_int(&mut v, e.len() as u64);
            v.extend_from_slice(e);
        }
        v.push(0x0C);
        v.extend_from_slice(&45u16.to_le_bytes());
        v.extend_from_slice(&1024u32.to_le_bytes());
        v.push(0xFC); // MYSQL_TYPE_BLOB
        v.extend_from_slice(&0x0090u16.to_le_bytes());
        v.push(0);
        v.extend_from_slice(&[0, 0]);
        v
    }

    #[test]
    fn column_definitions_parse_with_and_without_mariadb_extended_metadata() {
        for ext in [None, Some(&b""[..]), Some(&b"\x01\x04json"[..])] {
            let c = column_def(&def(ext)).unwrap_or_else(|| panic!("{ext:?}"));
            assert_eq!(c.name_str(), "j");
            assert_eq!(c.character_set(), 45);
            assert_eq!(c.column_length(), 1024);
            assert_eq!(
                c.column_type(),
                mysql_common::constants::ColumnType::MYSQL_TYPE_BLOB
            );
        }
        assert!(column_def(&def(None)[..20]).is_none());
        assert!(column_def(b"").is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc_int(&mut buf, v);
            assert_eq!(lenenc_int(&buf), Some((v, buf.len())), "value {v}");
        }
        assert_eq!(lenenc_int(&[0xFB]), None);
        assert_eq!(lenenc_int(&[0xFC, 1]), None);
    }

    #[tokio::test]
    async fn split_payloads_are_joined_and_queued_back_identically() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let payload: Vec<u8> = (0..MAX_PAYLOAD + 10).map(|i| i as u8).collect();
        let expected = payload.clone();
        let sender = tokio::spawn(async move {
            let mut io = PacketIo::new(TcpStream::connect(addr).await.unwrap(), CLIENT_CHUNK);
            let next = io.send(3, &payload).await.unwrap();
            io.send(next, b"tail").await.unwrap();
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut io = PacketIo::new(sock, CLIENT_CHUNK);
        let p = io.read_packet(usize::MAX).await.unwrap().unwrap();
        assert_eq!((p.seq, p.last_seq), (3, 4));
        assert_eq!(p.payload.as_ref(), expected.as_slice());
        let tail = io.read_packet(usize::MAX).await.unwrap().unwrap();
        assert_eq!((tail.seq, tail.payload.as_ref()), (5, &b"tail"[..]));
        sender.await.unwrap();
        assert!(io.read_packet(usize::MAX).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_idle_client_gives_back_what_a_big_packet_grew() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut io = PacketIo::new(TcpStream::connect(addr).await.unwrap(), CLIENT_CHUNK);
            io.send(0, &[7u8; 200_000]).await.unwrap();
            io.send(1, b"small").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut io = PacketIo::new(sock, CLIENT_CHUNK);
        let big = io.read_packet(usize::MAX).await.unwrap().unwrap();
        assert_eq!(big.payload.len(), 200_000);
        drop(big);
        // Idle now: the 200 kB allocation must go, although `rbuf`'s own capacity (the tail
        // after the packet) does not show it — reserving room would otherwise reclaim it.
        if io.rbuf.is_empty() {
            io.shrink_idle();
            io.rbuf.reserve(1024);
            assert!(
                io.rbuf.capacity() <= 4 * CLIENT_CHUNK,
                "{}",
                io.rbuf.capacity()
            );
        }
        let small = io.read_packet(usize::MAX).await.unwrap().unwrap();
        assert_eq!(small.payload.as_ref(), b"small");
        io.shrink_idle();
        io.rbuf.reserve(1024);
        assert!(
            io.rbuf.capacity() <= 4 * CLIENT_CHUNK,
            "{}",
            io.rbuf.capacity()
        );
        assert!(!io.grown);
    }

    #[tokio::test]
    async fn a_packet_over_the_limit_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut io = PacketIo::new(TcpStream::connect(addr).await.unwrap(), CLIENT_CHUNK);
            io.send(0, &[7u8; 2000]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        });
        let (sock, _) = listener.accept().await.unwrap();
        let err = PacketIo::new(sock, CLIENT_CHUNK)
            .read_packet(1024)
            .await
            .unwrap_err();
        assert!(err.get_ref().unwrap().is::<PacketTooLarge>());
    }
}
