#!/usr/bin/env python3
"""mysql-connector-python end-to-end scenario for Rainbow Bridge.

Drives the proxy with Oracle's mysql-connector-python and compares what it sees
with the values inserted and with a direct connection to the backend MariaDB
(the oracle). The scenario runs once per implementation of the driver: the
pure-Python one (use_pure=True) and, when it can be loaded, the C extension
(use_pure=False). Each pass uses both the text protocol (cursor()) and the
binary protocol (cursor(prepared=True), server-side prepared statements):

  1. types       every common column type round-trips (parameterised INSERT and
                 SELECT); proxy and direct return identical rows and columns
  2. params      a SELECT of placeholders of several types returns them unchanged
  3. tx          rollback hides a row, commit shows it on a second connection,
                 autocommit off then on
  4. ps-reuse    one prepared statement executed 100 times, then closed
  5. big         10,000 rows: buffered, prepared and unbuffered (streaming)
  6. errors      1146/42S02, 1062/23000, 1064/42000 leave the connection usable;
                 an error inside a transaction does not end it

Usage (install the driver with tests/drivers/install.sh):
    python3 tests/drivers/connector_python.py --host 127.0.0.1 --port P \
        --direct-port D --user U --password W --db DB \
        [--direct-user rb --direct-password rb]

Exit status 0 and a last line "N passed, 0 failed" when every check holds;
otherwise each failure is printed (what, expected, got) and the status is 1.
"""

import argparse
import datetime
import faulthandler
import json
import struct
import sys
import traceback
from decimal import Decimal

# The C extension links against the OpenSSL that the wheel ships (mysql/vendor/). If Python's
# ssl module is imported first it loads the system libssl, which may be older than the one the
# extension needs, and the extension then fails to load. Importing it first avoids that.
try:
    import _mysql_connector  # noqa: F401
except ImportError:
    pass

try:
    import mysql.connector
    from mysql.connector import errors as myerrors
except ImportError:  # pragma: no cover - environment problem, not a check
    print("mysql-connector-python is not installed (tests/drivers/install.sh)")
    print("0 passed, 1 failed")
    sys.exit(1)


ARGS = None  # filled in by main()


class Abort(Exception):
    """Stops the current step after a failure that later checks depend on."""


class Checks:
    """Counts checks; every failure is printed at once with what, expected and got."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.prefix = ""

    def fail(self, message):
        self.failed += 1
        print("FAIL %s%s" % (self.prefix, message))
        return False

    def eq(self, got, expected, what):
        """Equal values of the same type (True == 1 and 1 == 1.0 do not count as equal)."""
        if got == expected and type(got) is type(expected):
            self.passed += 1
            return True
        return self.fail("%s: expected %s, got %s" % (what, short(expected), short(got)))

    def true(self, condition, what):
        if condition:
            self.passed += 1
            return True
        return self.fail(what)

    def rows(self, got, expected, what):
        """Compare row lists value by value (type included), naming the first difference."""
        got, expected = list(got), list(expected)
        if len(got) != len(expected):
            return self.fail("%s: expected %d rows, got %d rows" % (what, len(expected), len(got)))
        for i, (g, e) in enumerate(zip(got, expected)):
            g, e = tuple(g), tuple(e)
            if len(g) != len(e):
                return self.fail("%s: row %d: expected %d columns, got %d" % (what, i, len(e), len(g)))
            for j, (gv, ev) in enumerate(zip(g, e)):
                if gv != ev or type(gv) is not type(ev):
                    return self.fail("%s: row %d column %d: expected %s, got %s"
                                     % (what, i, j, short(ev), short(gv)))
        self.passed += 1
        return True


C = Checks()


def short(value, limit=240):
    text = "%s %r" % (type(value).__name__, value)
    if len(text) > limit:
        text = text[:limit] + "... (%d chars)" % len(text)
    return text


# --------------------------------------------------------------------------
# connections
# --------------------------------------------------------------------------

class Pass:
    """One run of the scenario: a driver implementation and a table-name prefix."""

    def __init__(self, name, use_pure):
        self.name = name
        self.use_pure = use_pure
        self.prefix = "drv_py_%s_" % name

    def table(self, what):
        return self.prefix + what

    def _connect(self, port, user, password, **kwargs):
        params = dict(host=ARGS.host, port=port, user=user, password=password,
                      database=ARGS.db, use_pure=self.use_pure, charset="utf8mb4",
                      connection_timeout=10)
        params.update(kwargs)
        conn = mysql.connector.connect(**params)
        return conn

    def proxy(self, **kwargs):
        return self._connect(ARGS.port, ARGS.user, ARGS.password, **kwargs)

    def direct(self, **kwargs):
        return self._connect(ARGS.direct_port, ARGS.direct_user, ARGS.direct_password, **kwargs)


def run(conn, sql, params=None, prepared=False):
    """Execute sql and return all rows (None when there is no result set)."""
    cur = conn.cursor(prepared=prepared)
    try:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description is not None else None
    finally:
        cur.close()


def scalar(conn, sql, params=None, prepared=False):
    rows = run(conn, sql, params, prepared)
    if rows is None or len(rows) != 1 or len(rows[0]) != 1:
        raise Abort("%r: expected a single value, got %s" % (sql, short(rows)))
    return rows[0][0]


def check_select_1(conn, what):
    C.eq(run(conn, "SELECT 1"), [(1,)], "SELECT 1 %s" % what)


def drop(p, *names):
    conn = p.direct(autocommit=True)
    try:
        for name in names:
            run(conn, "DROP TABLE IF EXISTS %s" % p.table(name))
    finally:
        conn.close()


# --------------------------------------------------------------------------
# 1. types
# --------------------------------------------------------------------------

TYPES_COLUMNS = [
    ("id", "INT NOT NULL PRIMARY KEY"),
    ("c_tiny", "TINYINT"),
    ("c_small", "SMALLINT"),
    ("c_int", "INT"),
    ("c_big", "BIGINT"),
    ("c_ubig", "BIGINT UNSIGNED"),
    ("c_dec", "DECIMAL(20,6)"),
    ("c_float", "FLOAT"),
    ("c_double", "DOUBLE"),
    ("c_date", "DATE"),
    ("c_time", "TIME(3)"),
    ("c_dt", "DATETIME(6)"),
    ("c_ts", "TIMESTAMP NULL"),
    ("c_year", "YEAR"),
    ("c_char", "CHAR(5)"),
    ("c_vc", "VARCHAR(100) CHARACTER SET utf8mb4"),
    ("c_text", "TEXT"),
    ("c_blob", "BLOB"),
    ("c_bit", "BIT(8)"),
    ("c_enum", "ENUM('a','b','c')"),
    ("c_set", "SET('x','y','z')"),
    ("c_json", "JSON"),
    ("c_null", "INT NULL"),
]
NAMES = [name for name, _ in TYPES_COLUMNS]

D, T, DT = datetime.date, datetime.timedelta, datetime.datetime
JSON_DOC = {"emoji": "\U0001F600", "cjk": "\u6f22\u5b57", "n": [1, 2.5, None, True, False],
            "nested": {"k": "v"}}

# The values inserted (parameters), one tuple per row, in NAMES order.
TYPES_ROWS = [
    (1, -128, -32768, -2147483648, -9223372036854775808, 0,
     Decimal("-12345678901234.567890"), -2.25, -1.7976931348623157e308,
     D(1000, 1, 1), -T(hours=12, minutes=34, seconds=56, milliseconds=789),
     DT(2024, 2, 29, 23, 59, 59, 999999), DT(2000, 1, 1, 0, 0, 0), 1901,
     "", "\U0001F600 \u6f22\u5b57 \u304b\u306a \ud55c\uad6d\uc5b4 \U0001F680",
     "it's a \"test\"\n\\ \u00fcn\u00efc\u00f8d\u00e9", b"\x00\xff\x00\x01\xfe\x00",
     0, "a", "x,z", json.dumps(JSON_DOC), None),
    (2, 127, 32767, 2147483647, 9223372036854775807, 18446744073709551615,
     Decimal("99999999999999.999999"), 1.5, 1.7976931348623157e308,
     D(9999, 12, 31), T(hours=838, minutes=59, seconds=59),
     DT(9999, 12, 31, 23, 59, 59, 999999), DT(2038, 1, 18, 12, 0, 0), 2155,
     "abcde", "\u6f22\u5b57\u304b\u306a\ud55c\uad6d\uc5b4" * 10, "\U0001F600" * 1000,
     bytes(range(256)) * 4, 255, "c", "x,y,z", "{}", 42),
    (3,) + (None,) * 22,
    (4, 0, -1, 1, -1, 1, Decimal("-0.000001"), 0.0, 2.2250738585072014e-308,
     D(2024, 2, 29), -T(milliseconds=1), DT(1970, 1, 1, 0, 0, 0, 1), DT(1999, 12, 31, 23, 59, 59),
     2000, "a b", "plain ascii", "", b"\x00", 165, "b", "", '{"a": [true, null, "x\\"y"]}', -7),
]


# Driver bugs of mysql-connector-python (26.10.0), seen on a direct connection to MariaDB too,
# and how the scenario steps around them without giving up the check:
#  - binary-protocol TIME parameters: the pure-Python encoder mis-encodes negative timedeltas
#    (-12:34:56.789 arrives as -35:25:03.211) and the C extension sends every timedelta as
#    00:00:00. TIME parameters of prepared statements are therefore given as strings.
#  - the C extension cannot bind an int above 2**63-1 ("int too big to convert", and the
#    connection is lost): BIGINT UNSIGNED max is bound as a Decimal there.
#  - the C extension stores the type of a Decimal parameter number i in slot 2*i of its bind
#    array (mysql_capi.c, MySQLPrepStmt_execute: `mbind[i].buffer_type` where `mbind` already
#    points at slot i). Past the middle of the parameter list that writes beyond the array and
#    corrupts the heap; the process aborts later ("corrupted size vs. prev_size"), or not,
#    depending on what else was allocated (valgrind: "Invalid write of size 4" there, directly
#    against MariaDB as through the proxy). bind_params binds such a Decimal as its string.
#  - the C extension binds a Python float as a 4-byte FLOAT (3.141592653589793 arrives as
#    3.1415927410125732, DOUBLE max as inf): its prepared INSERT binds floats as repr() strings.
#  - the pure-Python binary-result decoder does not know YEAR (IndexError) and drops the sign of
#    a negative TIME under 24 hours: its prepared SELECT reads CAST(c_year AS SIGNED) and
#    CAST(c_time AS CHAR) instead, and the TIME is compared as its text.
#  - the C extension's binary-result decoder ignores UNSIGNED on BIGINT (18446744073709551615
#    reads as -1): its prepared SELECT reads CAST(c_ubig AS CHAR) and compares the text.
#  - the C extension's text protocol sends bytes without the _binary introducer, so a bare
#    bytes placeholder comes back decoded as (broken) text: the parameter check wraps it in
#    CAST(%s AS BINARY).


def time_text(value):
    """A timedelta as MariaDB writes a TIME(3): '-12:34:56.789'."""
    sign = "-" if value < T(0) else ""
    us = abs(value) // T(microseconds=1)
    secs, us = divmod(us, 1000000)
    return "%s%02d:%02d:%02d.%03d" % (sign, secs // 3600, secs // 60 % 60, secs % 60, us // 1000)


def bind_value(p, prepared, value):
    """The parameter given to the driver for an inserted value (see the driver bugs above)."""
    if prepared and isinstance(value, T):
        return time_text(value)
    if prepared and not p.use_pure and isinstance(value, int) and value > 2 ** 63 - 1:
        return Decimal(value)
    if prepared and not p.use_pure and isinstance(value, float) and value != float(f32(value)):
        return repr(value)
    return value


def bind_params(p, prepared, values):
    """bind_value of each parameter of one statement, with no Decimal in the second half of the
    list for the C extension (see the driver bugs above)."""
    out = []
    for i, value in enumerate(values):
        bound = bind_value(p, prepared, value)
        if prepared and not p.use_pure and isinstance(bound, Decimal) and 2 * i >= len(values):
            bound = str(bound)
        out.append(bound)
    return tuple(out)


def f32(value):
    """value rounded to a 4-byte float."""
    return struct.unpack("<f", struct.pack("<f", value))[0] if abs(value) < 3.4e38 else float("inf")


def select_expr(p, prepared, name):
    if prepared and p.use_pure and name == "c_year":
        return "CAST(c_year AS SIGNED) AS c_year"
    if prepared and p.use_pure and name == "c_time":
        return "CAST(c_time AS CHAR) AS c_time"
    if prepared and not p.use_pure and name == "c_ubig":
        return "CAST(c_ubig AS CHAR) AS c_ubig"
    return name


def expected_value(p, prepared, name, value):
    """What the driver returns for an inserted value (its documented conversions)."""
    if value is None:
        return None
    if name == "c_time" and prepared and p.use_pure:
        return time_text(value)
    if name == "c_ubig" and prepared and not p.use_pure:
        return str(value)
    if name == "c_blob" and prepared and not p.use_pure:
        return bytearray(value)  # the C extension gives binary-protocol BLOBs as bytearray
    if name == "c_set" and (not prepared or not p.use_pure):
        # the text protocol (and the C extension) give a SET as a Python set of its members
        return set(value.split(",")) if value else set()
    if name == "c_bit" and prepared and p.use_pure:
        return bytes([value])  # BIT(8) read as its one byte in the binary protocol (pure)
    return value


def check_types(p):
    table = p.table("types")
    drop(p, "types")
    ddl = "CREATE TABLE %s (%s) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" % (
        table, ", ".join("%s %s" % c for c in TYPES_COLUMNS))
    insert = "INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(NAMES), ", ".join(["%s"] * len(NAMES)))
    conn = p.proxy(autocommit=True)
    try:
        run(conn, ddl)
        # rows 1 and 3 with the text protocol, rows 2 and 4 with a server-side prepared statement
        for row in TYPES_ROWS:
            prepared = row[0] % 2 == 0
            cur = conn.cursor(prepared=prepared)
            cur.execute(insert, bind_params(p, prepared, row))
            C.eq(cur.rowcount, 1, "INSERT INTO %s id=%d (%s) rowcount"
                 % (table, row[0], "prepared" if prepared else "text"))
            cur.close()
    finally:
        conn.close()

    results = {}
    for side, connect in (("proxy", p.proxy), ("direct", p.direct)):
        conn = connect()
        try:
            for prepared in (False, True):
                select = "SELECT %s FROM %s WHERE id BETWEEN %%s AND %%s ORDER BY id" % (
                    ", ".join(select_expr(p, prepared, n) for n in NAMES), table)
                cur = conn.cursor(prepared=prepared)
                cur.execute(select, (1, len(TYPES_ROWS)))
                rows = cur.fetchall()
                results[(side, prepared)] = (rows, list(cur.column_names),
                                             list(cur.description))
                cur.close()
        finally:
            conn.close()

    for prepared in (False, True):
        proto = "prepared" if prepared else "text"
        expected = [tuple(expected_value(p, prepared, n, v) for n, v in zip(NAMES, row))
                    for row in TYPES_ROWS]
        p_rows, p_names, p_desc = results[("proxy", prepared)]
        d_rows, d_names, d_desc = results[("direct", prepared)]
        C.eq(p_names, NAMES, "%s SELECT from %s through the proxy: column names" % (proto, table))
        C.eq(p_names, d_names, "%s SELECT: column names proxy vs direct" % proto)
        C.eq(p_desc, d_desc, "%s SELECT: cursor.description (name, type code, null_ok, flags, charset) proxy vs direct" % proto)
        C.eq(len(p_rows), len(TYPES_ROWS), "%s SELECT through the proxy: row count" % proto)
        C.rows(p_rows, d_rows, "%s SELECT: rows proxy vs direct" % proto)
        for got, exp in zip(p_rows, expected):
            for name, g, e in zip(NAMES, got, exp):
                what = "%s SELECT through the proxy: id=%s %s" % (proto, exp[0], name)
                if name == "c_json" and e is not None and isinstance(g, str):
                    C.eq(json.loads(g), json.loads(e), what + " (parsed JSON)")
                else:
                    C.eq(g, e, what)


# --------------------------------------------------------------------------
# 2. parameters
# --------------------------------------------------------------------------

PARAMS = (12345, "it's \"quoted\" \\ back\\slash \\' \U0001F600", None, "-98765.4321",
          b"\x00\x01'\"\\\xff", -9223372036854775808, 18446744073709551615, 2.5)


def check_params(p):
    sql = ("SELECT %s AS i, %s AS s, %s AS n, CAST(%s AS DECIMAL(12,4)) AS d, CAST(%s AS BINARY) AS b,"
           " %s AS mn, %s AS mx, %s AS f")
    for prepared in (False, True):
        proto = "prepared" if prepared else "text"
        for side, connect in (("proxy", p.proxy), ("direct", p.direct)):
            conn = connect()
            try:
                cur = conn.cursor(prepared=prepared)
                cur.execute(sql, bind_params(p, prepared, PARAMS))
                rows = cur.fetchall()
                names = list(cur.column_names)
                cur.close()
            finally:
                conn.close()
            what = "%s SELECT of 8 placeholders (%s)" % (proto, side)
            C.eq(names, ["i", "s", "n", "d", "b", "mn", "mx", "f"], what + ": column names")
            if not C.eq(len(rows), 1, what + ": row count"):
                continue
            i, s, n, d, b, mn, mx, f = rows[0]
            C.eq(i, PARAMS[0], what + ": int")
            C.eq(s, PARAMS[1], what + ": string with quotes and backslashes")
            C.eq(n, None, what + ": NULL")
            C.eq(d, Decimal("-98765.4321"), what + ": decimal given as a string")
            # the C extension gives binary strings of the binary protocol as bytearray
            C.eq(bytes(b) if isinstance(b, bytearray) else b, PARAMS[4], what + ": bytes")
            C.eq(mn, PARAMS[5], what + ": BIGINT min")
            # bound as a string by the C extension (see bind_params), so it comes back as one
            C.eq(mx, bind_params(p, prepared, PARAMS)[6], what + ": BIGINT UNSIGNED max")
            # the text protocol writes 2.5 as a literal, which MariaDB types as DECIMAL
            C.eq(f, PARAMS[7] if prepared else Decimal("2.5"), what + ": float")


# --------------------------------------------------------------------------
# 3. transactions
# --------------------------------------------------------------------------

def check_transactions(p):
    table = p.table("tx")
    drop(p, "tx")
    d = p.direct(autocommit=True)
    run(d, "CREATE TABLE %s (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB" % table)
    a = p.proxy(autocommit=True)
    b = p.proxy(autocommit=True)
    count = "SELECT COUNT(*) FROM %s WHERE id = %%s" % table
    try:
        a.start_transaction()
        C.eq(a.in_transaction, True, "a.in_transaction after start_transaction()")
        run(a, "INSERT INTO %s VALUES (%%s, %%s)" % table, (1, "rolled back"))
        C.eq(scalar(a, count, (1,)), 1, "row 1 visible inside its own transaction")
        C.eq(scalar(b, count, (1,)), 0, "row 1 not visible on a second proxy connection before rollback")
        a.rollback()
        C.eq(scalar(a, count, (1,)), 0, "row 1 after rollback (same connection)")
        C.eq(scalar(b, count, (1,)), 0, "row 1 after rollback (second proxy connection)")
        C.eq(scalar(d, count, (1,)), 0, "row 1 after rollback (direct)")

        a.start_transaction()
        run(a, "INSERT INTO %s VALUES (%%s, %%s)" % table, (2, "committed"), prepared=True)
        C.eq(scalar(b, count, (2,)), 0, "row 2 not visible on a second proxy connection before commit")
        a.commit()
        C.eq(run(b, "SELECT id, v FROM %s ORDER BY id" % table), [(2, "committed")],
             "table after commit (second proxy connection)")
        C.eq(run(d, "SELECT id, v FROM %s ORDER BY id" % table), [(2, "committed")],
             "table after commit (direct)")

        a.autocommit = False
        C.eq(scalar(a, "SELECT @@autocommit"), 0, "SELECT @@autocommit after autocommit = False")
        C.eq(a.autocommit, False, "a.autocommit (server status flag) after autocommit = False")
        run(a, "INSERT INTO %s VALUES (%%s, %%s)" % table, (3, "autocommit off"))
        C.eq(scalar(b, count, (3,)), 0, "row 3 (autocommit off, no commit yet) on a second proxy connection")
        a.autocommit = True  # SET autocommit=1 commits the open transaction
        C.eq(scalar(a, "SELECT @@autocommit"), 1, "SELECT @@autocommit after autocommit = True")
        C.eq(a.autocommit, True, "a.autocommit (server status flag) after autocommit = True")
        C.eq(scalar(b, count, (3,)), 1, "row 3 after autocommit was switched back on (second proxy connection)")
        run(a, "INSERT INTO %s VALUES (%%s, %%s)" % table, (4, "autocommit on"))
        C.eq(scalar(b, count, (4,)), 1, "row 4 inserted with autocommit on (second proxy connection)")
        C.eq(run(d, "SELECT id FROM %s ORDER BY id" % table), [(2,), (3,), (4,)], "final table (direct)")
    finally:
        a.close()
        b.close()
        d.close()


# --------------------------------------------------------------------------
# 4. prepared-statement reuse
# --------------------------------------------------------------------------

def global_status(p, name):
    conn = p.direct()
    try:
        rows = run(conn, "SHOW GLOBAL STATUS LIKE %s", (name,))
    finally:
        conn.close()
    if len(rows) != 1:
        raise Abort("SHOW GLOBAL STATUS LIKE %r returned %s" % (name, short(rows)))
    return int(rows[0][1])


def check_ps_reuse(p):
    table = p.table("ps")
    drop(p, "ps")
    d = p.direct(autocommit=True)
    try:
        run(d, "CREATE TABLE %s (id INT PRIMARY KEY, v VARCHAR(20), amt DECIMAL(10,2)) ENGINE=InnoDB" % table)
        run(d, "INSERT INTO %s SELECT seq, CONCAT('row-', seq), seq / 4 FROM seq_1_to_100" % table)
    finally:
        d.close()
    conn = p.proxy()
    try:
        executes_before = global_status(p, "Com_stmt_execute")
        cur = conn.cursor(prepared=True)
        sql = "SELECT id, v, amt, ? * 3 FROM %s WHERE id = ? AND v = ?" % table
        bad = 0
        statement_ids = set()
        for i in range(1, 101):
            cur.execute(sql, (i, i, "row-%d" % i))
            rows = cur.fetchall()
            if p.use_pure:
                statement_ids.add(cur._prepared["statement_id"])
            expected = [(i, "row-%d" % i, (Decimal(i) / 4).quantize(Decimal("0.01")), i * 3)]
            if rows != expected or [type(v) for v in rows[0]] != [type(v) for v in expected[0]]:
                bad += 1
                C.fail("prepared statement execution %d: expected %s, got %s"
                       % (i, short(expected), short(rows)))
        C.eq(bad, 0, "prepared SELECT executed 100 times: executions with a wrong result")
        executes = global_status(p, "Com_stmt_execute") - executes_before
        C.true(executes >= 100, "the backend counted %d COM_STMT_EXECUTE for 100 executions of a "
                                "prepared statement (expected at least 100)" % executes)
        if p.use_pure:
            C.eq(len(statement_ids), 1, "statement ids used by the 100 executions (one prepare)")
        # a miss: no row
        cur.execute(sql, (1, 1, "row-2"))
        C.eq(cur.fetchall(), [], "prepared statement with parameters that match no row")
        cur.close()  # COM_STMT_CLOSE
        check_select_1(conn, "after closing the prepared statement")
        C.eq(scalar(conn, "SELECT v FROM %s WHERE id = ?" % table, (7,), prepared=True), "row-7",
             "a new prepared statement after closing the first")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# 5. a 10k-row result
# --------------------------------------------------------------------------

N_BIG = 10000


def check_big(p):
    table = p.table("big")
    drop(p, "big")
    conn = p.proxy(autocommit=True)
    try:
        run(conn, "CREATE TABLE %s (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" % table)
        cur = conn.cursor()
        for start in range(1, N_BIG + 1, 1000):
            ids = range(start, start + 1000)
            params = []
            for i in ids:
                params += [i, "row-%05d" % i]
            cur.execute("INSERT INTO %s (id, v) VALUES %s" % (table, ", ".join(["(%s, %s)"] * len(ids))), params)
            C.eq(cur.rowcount, 1000, "multi-row INSERT of ids %d..%d rowcount" % (start, start + 999))
        cur.close()

        select = "SELECT id, v FROM %s WHERE id > %%s ORDER BY id" % table
        expected_sum = N_BIG * (N_BIG + 1) // 2
        first, last = (1, "row-00001"), (N_BIG, "row-%05d" % N_BIG)

        def verify(rows, how):
            C.eq(len(rows), N_BIG, "%s: row count" % how)
            C.eq(sum(r[0] for r in rows), expected_sum, "%s: sum of ids" % how)
            if rows:
                C.eq(tuple(rows[0]), first, "%s: first row" % how)
                C.eq(tuple(rows[-1]), last, "%s: last row" % how)

        for how, kwargs in (("buffered text cursor", dict(buffered=True)),
                            ("prepared cursor", dict(prepared=True))):
            cur = conn.cursor(**kwargs)
            cur.execute(select, (0,))
            rows = cur.fetchall()
            cur.close()
            verify(rows, "SELECT of 10,000 rows, %s" % how)

        # unbuffered (the default cursor): rows are read from the socket as they are fetched
        cur = conn.cursor(buffered=False)
        cur.execute(select, (0,))
        streamed = []
        while True:
            row = cur.fetchone()
            if row is None:
                break
            streamed.append(row)
        cur.close()
        verify(streamed, "SELECT of 10,000 rows, unbuffered cursor with fetchone()")
        check_select_1(conn, "after the unbuffered 10,000-row result")

        d = p.direct()
        try:
            d_rows = run(d, select, (0,))
        finally:
            d.close()
        C.rows(streamed, d_rows, "10,000 rows proxy (unbuffered) vs direct")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# 6. errors
# --------------------------------------------------------------------------

def capture_error(conn, sql, params=None, prepared=False):
    """Run sql expecting a server error; return (errno, sqlstate, msg)."""
    cur = conn.cursor(prepared=prepared)
    try:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description is not None else None
    except myerrors.Error as exc:
        return (exc.errno, exc.sqlstate, exc.msg)
    finally:
        try:
            cur.close()
        except myerrors.Error:
            pass
    raise Abort("%r: expected an error, but it succeeded with %s" % (sql, short(rows)))


def check_errors(p):
    table = p.table("err")
    drop(p, "err")
    d = p.direct(autocommit=True)
    run(d, "CREATE TABLE %s (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB" % table)
    run(d, "INSERT INTO %s VALUES (1, 'one')" % table)
    cases = [
        ("missing table", "SELECT * FROM %s WHERE id = %%s" % p.table("no_such_table"), (1,), 1146, "42S02"),
        ("duplicate key", "INSERT INTO %s VALUES (%%s, %%s)" % table, (1, "again"), 1062, "23000"),
        ("syntax error", "SELEC %s FROM dual", (1,), 1064, "42000"),
    ]
    conn = p.proxy(autocommit=True)
    try:
        for prepared in (False, True):
            proto = "prepared" if prepared else "text"
            for label, sql, params, code, state in cases:
                got = capture_error(conn, sql, params, prepared)
                want = capture_error(d, sql, params, prepared)
                C.eq(got[0], code, "%s %s: error code" % (proto, label))
                C.eq(got[1], state, "%s %s: SQLSTATE" % (proto, label))
                C.eq(got, want, "%s %s: (code, SQLSTATE, message) proxy vs direct" % (proto, label))
                check_select_1(conn, "on the same connection after the %s %s error" % (proto, label))

        # an error inside a transaction does not end it
        conn.start_transaction()
        run(conn, "INSERT INTO %s VALUES (%%s, %%s)" % table, (10, "in tx"))
        got = capture_error(conn, "INSERT INTO %s VALUES (%%s, %%s)" % table, (1, "dup"))
        C.eq(got[0], 1062, "duplicate key inside a transaction: error code")
        C.eq(conn.in_transaction, True, "in_transaction after the error inside the transaction")
        C.eq(scalar(conn, "SELECT @@in_transaction"), 1, "SELECT @@in_transaction after the error")
        C.eq(scalar(conn, "SELECT v FROM %s WHERE id = %%s" % table, (10,)), "in tx",
             "the transaction's earlier insert is still there after the error")
        C.eq(scalar(d, "SELECT COUNT(*) FROM %s WHERE id = 10" % table), 0,
             "the transaction's insert is not visible directly before the commit")
        conn.commit()
        C.eq(run(d, "SELECT id, v FROM %s ORDER BY id" % table), [(1, "one"), (10, "in tx")],
             "table after the commit (direct)")
    finally:
        conn.close()
        d.close()


# --------------------------------------------------------------------------

STEPS = [
    ("types", check_types),
    ("params", check_params),
    ("tx", check_transactions),
    ("ps-reuse", check_ps_reuse),
    ("big", check_big),
    ("errors", check_errors),
]
TABLES = ["types", "tx", "ps", "big", "err"]


def run_pass(p):
    for step, fn in STEPS:
        C.prefix = "[%s %s] " % (p.name, step)
        before = (C.passed, C.failed)
        try:
            fn(p)
        except Abort as exc:
            C.fail(str(exc))
        except Exception as exc:  # a driver error where none was expected
            C.fail("unexpected %s: %s" % (type(exc).__name__, exc))
            traceback.print_exc(file=sys.stdout)
        print("%s %s %s: %d checks, %d failed" % (
            "ok  " if C.failed == before[1] else "FAIL", p.name, step,
            C.passed - before[0] + C.failed - before[1], C.failed - before[1]))
    C.prefix = ""
    try:
        drop(p, *TABLES)
    except Exception as exc:  # cleanup failures are not check failures
        print("note: cleanup of %s failed: %s" % (p.name, exc))


def main():
    global ARGS
    faulthandler.enable()  # the C extension has crashed once (SIGSEGV): show where if it does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the proxy's port")
    parser.add_argument("--direct-port", type=int, required=True, help="the backend MariaDB's port")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--direct-user", default="rb")
    parser.add_argument("--direct-password", default="rb")
    ARGS = parser.parse_args()

    passes = [Pass("pure", True)]
    if mysql.connector.HAVE_CEXT:
        passes.append(Pass("cext", False))
    else:
        print("note: the C extension is not available; only the pure-Python pass runs")
    print("mysql-connector-python %s" % mysql.connector.__version__)
    for p in passes:
        run_pass(p)
    print("%d passed, %d failed" % (C.passed, C.failed))
    sys.exit(1 if C.failed else 0)


if __name__ == "__main__":
    main()
