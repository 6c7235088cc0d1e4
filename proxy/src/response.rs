//! Where a backend's response to one command ends, found by looking only at packet headers and
//! first bytes — rows are never decoded.
//!
//! The tracker is fed the payload of every physical packet in order. It follows the result-set
//! grammar (column count, column definitions, optional EOF, rows, terminator, and again while
//! `SERVER_MORE_RESULTS_EXISTS` is set) in both the classic EOF and the `CLIENT_DEPRECATE_EOF`
//! framing, and remembers the final status flags, warnings, affected rows and last insert id.

use crate::packet::{lenenc_int, MAX_PAYLOAD};

pub const STATUS_IN_TRANS: u16 = 0x0001;
pub const STATUS_AUTOCOMMIT: u16 = 0x0002;
pub const STATUS_MORE_RESULTS: u16 = 0x0008;
pub const STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// What kind of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR or result sets, possibly several.
    ResultSets,
    /// COM_STMT_FETCH: rows then a terminator.
    Rows,
    /// COM_STMT_PREPARE: prepare-OK, parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions then EOF.
    FieldList,
    /// COM_STATISTICS: one string packet.
    Single,
    /// COM_PING, COM_INIT_DB, COM_RESET_CONNECTION: OK or ERR.
    OkOrErr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    ColumnDefs(u64),
    ColumnsEof,
    Rows,
    PrepareParams(u16, u16),
    PrepareParamsEof(u16),
    PrepareCols(u16),
    PrepareColsEof,
    FieldList,
    Done,
}

/// Summary of a complete response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Status flags of the final OK/EOF (0 if the response ended with ERR).
    pub status: u16,
    pub warnings: u16,
    pub affected_rows: u64,
    /// Last non-zero insert id reported by an OK packet of this response.
    pub last_insert_id: u64,
    /// Error code when the response ended with an ERR packet.
    pub error: Option<u16>,
    /// Prepare-OK fields: backend statement id, columns, parameters.
    pub prepared: Option<(u32, u16, u16)>,
}

/// A malformed or unexpected backend response.
#[derive(Debug, thiserror::Error)]
#[error("unexpected backend packet: {0}")]
pub struct BadResponse(pub &'static str);

/// Follows one response packet by packet.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    deprecate_eof: bool,
    /// The previous physical packet was full-size: the next one continues it.
    continuation: bool,
    /// COM_STATISTICS: the first packet is the whole response.
    single: bool,
    /// COM_STMT_PREPARE: a leading 0x00 is a prepare-OK, not an OK.
    prepare: bool,
    pub outcome: Outcome,
}

impl Tracker {
    pub fn new(kind: ResponseKind, deprecate_eof: bool) -> Self {
        let state = match kind {
            ResponseKind::Rows => State::Rows,
            ResponseKind::FieldList => State::FieldList,
            _ => State::First,
        };
        Tracker {
            state,
            deprecate_eof,
            continuation: false,
            single: kind == ResponseKind::Single,
            prepare: kind == ResponseKind::Prepare,
            outcome: Outcome::default(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds one logical (already joined) packet's payload.
    pub fn feed_logical(&mut self, payload: &[u8]) -> Result<(), BadResponse> {
        self.continuation = false;
        let r = self.feed(payload);
        self.continuation = false;
        r
    }

    /// Feeds one physical packet's payload, in order.
    pub fn feed(&mut self, payload: &[u8]) -> Result<(), BadResponse> {
        let full = payload.len() >= MAX_PAYLOAD;
        if std::mem::replace(&mut self.continuation, full) {
            return Ok(()); // the middle or tail of a split row: nothing to classify
        }
        if self.single {
            self.state = State::Done;
            return Ok(());
        }
        let first = payload.first().copied();
        match self.state {
            State::Done => return Err(BadResponse("packet after the end of the response")),
            State::First => match first {
                Some(0x00) if self.prepare => {
                    let p = payload;
                    if p.len() < 12 {
                        return Err(BadResponse("short prepare-OK"));
                    }
                    let id = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
                    let cols = u16::from_le_bytes([p[5], p[6]]);
                    let params = u16::from_le_bytes([p[7], p[8]]);
                    self.outcome.warnings = u16::from_le_bytes([p[10], p[11]]);
                    self.outcome.prepared = Some((id, cols, params));
                    self.state = State::PrepareParams(params, cols);
                    self.after_prepare_section();
                }
                Some(0x00) => self.ok(payload)?,
                Some(0xFF) => self.err(payload),
                Some(0xFB) => {
                    return Err(BadResponse(
                        "LOCAL INFILE request, which the proxy never negotiates",
                    ))
                }
                Some(_) => {
                    let (n, _) = lenenc_int(payload).ok_or(BadResponse("bad column count"))?;
                    if n == 0 {
                        return Err(BadResponse("a result set with no columns"));
                    }
                    self.state = State::ColumnDefs(n);
                }
                None => return Err(BadResponse("empty packet")),
            },
            State::ColumnDefs(n) => {
                if first == Some(0xFF) {
                    self.err(payload);
                    return Ok(());
                }
                self.state = match (n.saturating_sub(1), self.deprecate_eof) {
                    (0, false) => State::ColumnsEof,
                    (0, true) => State::Rows,
                    (left, _) => State::ColumnDefs(left),
                };
            }
            State::ColumnsEof => {
                if first != Some(0xFE) {
                    return Err(BadResponse("expected EOF after column definitions"));
                }
                let status = eof_status(payload);
                // A cursor was opened: rows come later through COM_STMT_FETCH.
                if status & STATUS_CURSOR_EXISTS != 0 {
                    self.finish(status, eof_warnings(payload));
                } else {
                    self.state = State::Rows;
                }
            }
            State::Rows => match first {
                Some(0xFE)
                    if payload.len() < 0xFF_FFFF && (self.deprecate_eof || payload.len() < 9) =>
                {
                    if self.deprecate_eof {
                        self.ok(payload)?;
                    } else {
                        let warnings = eof_warnings(payload);
                        self.finish(eof_status(payload), warnings);
                    }
                }
                Some(0xFF) => self.err(payload),
                _ => {}
            },
            State::PrepareParams(left, cols) => {
                self.state = State::PrepareParams(left.saturating_sub(1), cols);
                self.after_prepare_section();
            }
            State::PrepareParamsEof(cols) => {
                self.state = State::PrepareCols(cols);
                self.after_prepare_section();
            }
            State::PrepareCols(left) => {
                self.state = State::PrepareCols(left.saturating_sub(1));
                self.after_prepare_section();
            }
            State::PrepareColsEof => self.state = State::Done,
            State::FieldList => match first {
                Some(0xFE) if payload.len() < 9 || self.deprecate_eof => self.state = State::Done,
                Some(0xFF) => self.err(payload),
                _ => {}
            },
        }
        Ok(())
    }

    /// Moves past empty sections of a prepare response.
    fn after_prepare_section(&mut self) {
        loop {
            self.state = match self.state {
                State::PrepareParams(0, cols) if self.had_params() && !self.deprecate_eof => {
                    State::PrepareParamsEof(cols)
                }
                State::PrepareParams(0, cols) => State::PrepareCols(cols),
                State::PrepareCols(0) if self.had_cols() && !self.deprecate_eof => {
                    State::PrepareColsEof
                }
                State::PrepareCols(0) => State::Done,
                _ => return,
            };
            if matches!(
                self.state,
                State::PrepareParamsEof(_) | State::PrepareColsEof | State::Done
            ) {
                return;
            }
        }
    }

    fn had_params(&self) -> bool {
        self.outcome.prepared.is_some_and(|(_, _, p)| p > 0)
    }

    fn had_cols(&self) -> bool {
        self.outcome.prepared.is_some_and(|(_, c, _)| c > 0)
    }

    fn ok(&mut self, payload: &[u8]) -> Result<(), BadResponse> {
        let ok = parse_ok(payload).ok_or(BadResponse("malformed OK packet"))?;
        self.outcome.affected_rows = ok.affected_rows;
        if ok.last_insert_id != 0 {
            self.outcome.last_insert_id = ok.last_insert_id;
        }
        self.finish(ok.status, ok.warnings);
        Ok(())
    }

    fn err(&mut self, payload: &[u8]) {
        self.outcome.error = Some(u16::from_le_bytes([
            payload.get(1).copied().unwrap_or(0),
            payload.get(2).copied().unwrap_or(0),
        ]));
        self.outcome.status = 0;
        self.state = State::Done;
    }

    fn finish(&mut self, status: u16, warnings: u16) {
        self.outcome.status = status;
        self.outcome.warnings = warnings;
        self.state = if status & STATUS_MORE_RESULTS != 0 {
            State::First
        } else {
            State::Done
        };
    }
}

/// Warnings of an EOF packet (0 if it is too short to carry them).
fn eof_warnings(payload: &[u8]) -> u16 {
    match payload.get(1..3) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

fn eof_status(payload: &[u8]) -> u16 {
    if payload.len() >= 5 {
        u16::from_le_bytes([payload[3], payload[4]])
    } else {
        0
    }
}

/// The fixed fields of an OK packet (header 0x00 or 0xFE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkFields {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

pub fn parse_ok(payload: &[u8]) -> Option<OkFields> {
    let mut at = 1;
    let (affected_rows, n) = lenenc_int(payload.get(at..)?)?;
    at += n;
    let (last_insert_id, n) = lenenc_int(payload.get(at..)?)?;
    at += n;
    let b = payload.get(at..at + 4)?;
    Some(OkFields {
        affected_rows,
        last_insert_id,
        status: u16::from_le_bytes([b[0], b[1]]),
        warnings: u16::from_le_bytes([b[2], b[3]]),
    })
}

/// An OK packet payload written by the proxy itself.
pub fn ok_payload(affected_rows: u64, last_insert_id: u64, status: u16, warnings: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(11);
    p.push(0x00);
    crate::packet::put_lenenc_int(&mut p, affected_rows);
    crate::packet::put_lenenc_int(&mut p, last_insert_id);
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&warnings.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: ResponseKind, eof: bool, packets: &[&[u8]]) -> (bool, Outcome) {
        let mut t = Tracker::new(kind, eof);
        for p in packets {
            t.feed(p).unwrap();
        }
        (t.is_done(), t.outcome)
    }

    const OK_IN_TRANS: &[u8] = &[0x00, 1, 7, 0x03, 0x00, 0x00, 0x00];
    const EOF_AUTOCOMMIT: &[u8] = &[0xFE, 0, 0, 0x02, 0x00];
    const OK_EOF_AUTOCOMMIT: &[u8] = &[0xFE, 0, 0, 0x02, 0x00, 0x01, 0x00];

    #[test]
    fn an_ok_ends_the_response_and_reports_its_fields() {
        let (done, o) = run(ResponseKind::ResultSets, false, &[OK_IN_TRANS]);
        assert!(done);
        assert_eq!((o.affected_rows, o.last_insert_id, o.status), (1, 7, 3));
    }

    #[test]
    fn a_classic_result_set_ends_at_the_second_eof() {
        let col: &[u8] = &[3, b'd', b'e', b'f'];
        let row: &[u8] = &[1, b'1'];
        let mut t = Tracker::new(ResponseKind::ResultSets, false);
        for p in [&[1u8][..], col, EOF_AUTOCOMMIT, row] {
            t.feed(p).unwrap();
            assert!(!t.is_done());
        }
        t.feed(EOF_AUTOCOMMIT).unwrap();
        assert!(t.is_done());
    }

    #[test]
    fn a_deprecate_eof_result_set_ends_at_the_ok_terminator() {
        let (done, o) = run(
            ResponseKind::ResultSets,
            true,
            &[
                &[2],
                b"\x03def",
                b"\x03def",
                b"\x011\x012",
                OK_EOF_AUTOCOMMIT,
            ],
        );
        assert!(done);
        assert_eq!((o.status, o.warnings), (2, 1));
    }

    #[test]
    fn more_results_keep_the_response_open() {
        let more: &[u8] = &[0x00, 0, 0, 0x0A, 0x00, 0, 0];
        let mut t = Tracker::new(ResponseKind::ResultSets, true);
        t.feed(more).unwrap();
        assert!(!t.is_done());
        t.feed(&[0x00, 0, 0, 0x02, 0, 0, 0]).unwrap();
        assert!(t.is_done());
    }

    #[test]
    fn an_error_in_the_middle_of_rows_ends_the_response() {
        let (done, o) = run(
            ResponseKind::ResultSets,
            true,
            &[&[1], b"\x03def", b"\x011", b"\xff\x15\x04#HY000x"],
        );
        assert!(done);
        assert_eq!(o.error, Some(0x0415));
    }

    #[test]
    fn a_row_starting_with_0xfe_in_a_full_packet_is_not_a_terminator() {
        let big = vec![0xFEu8; MAX_PAYLOAD];
        let (done, _) = run(
            ResponseKind::ResultSets,
            true,
            &[&[1], b"\x03def", &big, &[0xFE, 1, 2]],
        );
        assert!(
            !done,
            "the continuation of a split row must not end the response"
        );
    }

    #[test]
    fn prepare_responses_are_counted_in_both_framings() {
        let ok: &[u8] = &[0x00, 9, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let (done, o) = run(
            ResponseKind::Prepare,
            false,
            &[ok, b"p1", b"p2", EOF_AUTOCOMMIT, b"c1", EOF_AUTOCOMMIT],
        );
        assert!(done);
        assert_eq!(o.prepared, Some((9, 1, 2)));
        let (done, _) = run(ResponseKind::Prepare, true, &[ok, b"p1", b"p2", b"c1"]);
        assert!(done);
        let none: &[u8] = &[0x00, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(run(ResponseKind::Prepare, false, &[none]).0);
    }

    #[test]
    fn a_cursor_result_ends_after_the_column_eof() {
        let eof_cursor: &[u8] = &[0xFE, 0, 0, 0x42, 0x00];
        assert!(
            run(
                ResponseKind::ResultSets,
                false,
                &[&[1], b"\x03def", eof_cursor]
            )
            .0
        );
    }

    #[test]
    fn field_list_and_single_packet_commands_end_where_expected() {
        assert!(
            run(
                ResponseKind::FieldList,
                false,
                &[b"\x03def", EOF_AUTOCOMMIT]
            )
            .0
        );
        assert!(run(ResponseKind::Single, false, &[b"Uptime: 5"]).0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a backend sends, the tracker answers Ok or BadResponse: it never panics.
        #[test]
        fn the_tracker_never_panics_on_arbitrary_packets(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..30),
            kind in 0u8..6,
            eof in any::<bool>(),
        ) {
            let kind = [ResponseKind::ResultSets, ResponseKind::Rows, ResponseKind::Prepare,
                        ResponseKind::FieldList, ResponseKind::Single, ResponseKind::OkOrErr][kind as usize];
            let mut t = Tracker::new(kind, eof);
            for p in &packets {
                if t.is_done() || t.feed(p).is_err() {
                    break;
                }
            }
        }
    }
}
