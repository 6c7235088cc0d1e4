#!/usr/bin/env python3
"""PyMySQL end-to-end scenario for Rainbow Bridge.

PyMySQL speaks the classic protocol (no CLIENT_DEPRECATE_EOF), so every
result set it reads is terminated by an EOF packet rather than an OK packet.
This scenario drives the proxy with it and compares what it sees with what a
direct connection to the backend MariaDB (the oracle) returns.

Usage:
    python3 tests/python/pymysql_scenario.py --proxy-port P --direct-port D \
        --user U --password W --db DB

Exit status 0 and a last line "N passed, 0 failed" when every check holds;
otherwise the first failure is described and the status is 1.
Only the standard library and pymysql are used.
"""

import argparse
import hashlib
import os
import sys
import traceback

try:
    import pymysql
    import pymysql.converters
    import pymysql.cursors
    from pymysql.constants import CLIENT
except ImportError:  # pragma: no cover - environment problem, not a check
    print("pymysql is not installed (python3 -m pip install pymysql)")
    print("0 passed, 1 failed")
    sys.exit(1)


HOST = "127.0.0.1"
ARGS = None  # filled in by main()


class CheckFailed(Exception):
    """Raised by the assertion helpers with a precise description."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def short(value, limit=300):
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "... (%d chars in repr)" % len(text)
    return text


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_eq(got, expected, what):
    if got != expected:
        raise CheckFailed("%s: expected %s, got %s" % (what, short(expected), short(got)))


def check_rows_eq(got, expected, what):
    """Compare two sequences of rows, pointing at the first difference."""
    got = list(got)
    expected = list(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            detail = ""
            if isinstance(g, (tuple, list)) and isinstance(e, (tuple, list)):
                for j, (gv, ev) in enumerate(zip(g, e)):
                    if gv != ev or type(gv) is not type(ev):
                        detail = " (first difference in column %d: expected %s, got %s)" % (
                            j, short(ev), short(gv))
                        break
            raise CheckFailed("%s: row %d differs%s: expected %s, got %s"
                              % (what, i, detail, short(e), short(g)))
    if len(got) != len(expected):
        raise CheckFailed("%s: expected %d rows, got %d rows"
                          % (what, len(expected), len(got)))


def proxy_connect(**kwargs):
    params = dict(host=HOST, port=ARGS.proxy_port, user=ARGS.user,
                  password=ARGS.password, database=ARGS.db,
                  connect_timeout=10, read_timeout=120, write_timeout=120)
    params.update(kwargs)
    return pymysql.connect(**params)


def direct_connect(**kwargs):
    params = dict(host=HOST, port=ARGS.direct_port, user=ARGS.direct_user,
                  password=ARGS.direct_password, database=ARGS.db,
                  connect_timeout=10, read_timeout=120, write_timeout=120)
    params.update(kwargs)
    return pymysql.connect(**params)


def query(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def scalar(conn, sql, params=None):
    rows = query(conn, sql, params)
    check(len(rows) == 1 and len(rows[0]) == 1,
          "%r: expected a single value, got %s" % (sql, short(rows)))
    return rows[0][0]


def run_direct(*statements):
    """Run setup/cleanup statements directly on the backend (autocommit)."""
    conn = direct_connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def field_meta(cursor):
    """Column metadata beyond the DB-API description (flags, charset, names)."""
    result = cursor._result  # PyMySQL internals; stable for years
    if result is None or not getattr(result, "fields", None):
        return None
    return [(f.name, f.org_name, f.table_name, f.org_table, f.db,
             f.charsetnr, f.flags, f.type_code, f.length, f.scale)
            for f in result.fields]


def capture_error(conn, sql, params=None):
    """Execute sql expecting a server error; return (class name, code, message)."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        msg = exc.args[1] if len(exc.args) > 1 else None
        return (type(exc).__name__, code, msg)
    raise CheckFailed("%r: expected an error, but it succeeded with %s" % (sql, short(rows)))


def collect_result_sets(cursor):
    """Read the current and every following result of a cursor."""
    sets = []
    while True:
        description = cursor.description
        rows = cursor.fetchall() if description is not None else None
        sets.append({
            "description": description,
            "rows": rows,
            "rowcount": cursor.rowcount,
            "meta": field_meta(cursor),
        })
        if not cursor.nextset():
            break
    return sets


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------

def check_version_and_handshake():
    """1. SELECT VERSION() matches; handshake server_version is 5.5.5-<backend>."""
    proxy = proxy_connect()
    direct = direct_connect()
    try:
        pv = scalar(proxy, "SELECT VERSION()")
        dv = scalar(direct, "SELECT VERSION()")
        check_eq(pv, dv, "SELECT VERSION() through the proxy vs direct")
        info = proxy.get_server_info()
        check(info.startswith("5.5.5-"),
              "handshake server_version seen by PyMySQL should start with '5.5.5-', got %r" % info)
        check(dv in info,
              "handshake server_version %r should contain the backend version %r" % (info, dv))
        check_eq(scalar(proxy, "SELECT DATABASE()"), ARGS.db, "SELECT DATABASE() through the proxy")
    finally:
        proxy.close()
        direct.close()


TYPES_DDL = """
CREATE TABLE py_types (
    id        INT NOT NULL PRIMARY KEY,
    c_ti      TINYINT,
    c_tiu     TINYINT UNSIGNED,
    c_si      SMALLINT,
    c_siu     SMALLINT UNSIGNED,
    c_mi      MEDIUMINT,
    c_miu     MEDIUMINT UNSIGNED,
    c_i       INT,
    c_iu      INT UNSIGNED,
    c_bi      BIGINT,
    c_biu     BIGINT UNSIGNED,
    c_dec     DECIMAL(30,10),
    c_flt     FLOAT,
    c_dbl     DOUBLE,
    c_date    DATE,
    c_dt      DATETIME(6),
    c_ts      TIMESTAMP(6) NULL,
    c_time    TIME(6),
    c_year    YEAR,
    c_vc      VARCHAR(50) CHARACTER SET utf8mb4,
    c_ch      CHAR(5),
    c_bin     BINARY(4),
    c_vbin    VARBINARY(10),
    c_blob    BLOB,
    c_text    TEXT,
    c_json    JSON,
    c_enum    ENUM('a','b'),
    c_set     SET('x','y'),
    c_bit     BIT(10)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""

TYPES_INSERT = (
    "INSERT INTO py_types VALUES ("
    + ", ".join(["%s"] * 28)
    + ", {bit})"
)


def types_rows():
    from decimal import Decimal
    json_doc = '{"emoji": "\U0001F600", "n": [1, 2.5, null, true, false], "nested": {"k": "v"}}'
    return [
        # minimums
        ((1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0,
          -9223372036854775808, 0, Decimal("-99999999999999999999.9999999999"),
          -3.40282e38, -1.7976931348623157e308,
          "0000-00-00", "1000-01-01 00:00:00.000000", "0000-00-00 00:00:00.000000",
          "-838:59:59.000000", 1901, "", "", b"\x00\x00\x00\x00", b"", b"", "",
          "[]", "a", ""), "b'0000000000'"),
        # maximums
        ((2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
          9223372036854775807, 18446744073709551615,
          Decimal("99999999999999999999.9999999999"),
          3.40282e38, 1.7976931348623157e308,
          "9999-12-31", "9999-12-31 23:59:59.999999", "2038-01-18 00:00:00.999999",
          "838:59:59.000000", 2155, "\U0001F600\U0001F680" * 25, "abcde",
          b"\xff\xff\xff\xff", b"\x00\xff" * 5, bytes(range(256)) * 100,
          "\u00fcn\u00efc\u00f8d\u00e9 \U0001F600\U0001F680 " * 100,
          json_doc, "b", "x,y"), "b'1111111111'"),
        # odd values: fractional/large TIME, leap day, quotes, NUL bytes
        ((3, 0, 1, -1, 1, 0, 1, -1, 1, -1, 1, Decimal("0.0000000001"),
          1.5, 2.2250738585072014e-308,
          "2024-02-29", "2024-02-29 12:34:56.123456", "2024-02-29 12:34:56.654321",
          "100:00:00.5", 0, "\U0001F600\U0001F680", "ab",
          b"\x00\xff", b"\x00\xff\x00", b"\x00\xff\x00'\\\"\n\r\x1a",
          "it's a \"test\"\n\\ \U0001F600\U0001F680", '{"a": 1, "b": [true, null, "x"]}',
          "b", "x"), "b'1010101010'"),
        # negative small TIME with fraction, early year
        ((4, -1, 128, -129, 32768, -32769, 8388608, -8388609, 2147483648,
          -2147483649, 9223372036854775808, Decimal("-0.5"),
          -0.0, 1e-300,
          "1000-01-01", "1970-01-01 00:00:00.000001", "2000-01-01 00:00:00.000001",
          "-00:00:00.000001", 1999, "plain ascii", "a b ",
          b"\x00", b"\xff", b"\x00", "", '{}', "a", "y"), "b'0000000001'"),
    ]


def check_types_roundtrip():
    """2. Every MariaDB type: proxy and direct return identical rows and metadata."""
    run_direct("DROP TABLE IF EXISTS py_types")
    proxy = proxy_connect(autocommit=True)
    try:
        with proxy.cursor() as cur:
            cur.execute("SET SESSION sql_mode=''")
            cur.execute(TYPES_DDL)
            for values, bit in types_rows():
                cur.execute(TYPES_INSERT.format(bit=bit), values)
                check_eq(cur.rowcount, 1, "rowcount of INSERT INTO py_types (id=%d)" % values[0])
            cur.execute("INSERT INTO py_types (id) VALUES (5)")  # the all-NULL row
            check_eq(cur.rowcount, 1, "rowcount of INSERT INTO py_types (id=5)")
    finally:
        proxy.close()

    results = {}
    for side, connect in (("proxy", proxy_connect), ("direct", direct_connect)):
        for conv_name, conv_kw in (("converted", {}), ("raw", {"conv": dict(pymysql.converters.encoders)})):
            conn = connect(**conv_kw)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT * FROM py_types ORDER BY id")
                    rows = cur.fetchall()
                    results[(side, conv_name)] = (rows, cur.description, field_meta(cur), cur.rowcount)
            finally:
                conn.close()

    for conv_name in ("converted", "raw"):
        p_rows, p_desc, p_meta, p_count = results[("proxy", conv_name)]
        d_rows, d_desc, d_meta, d_count = results[("direct", conv_name)]
        check_eq(len(d_rows), 5, "direct SELECT * FROM py_types row count (setup sanity)")
        check_rows_eq(p_rows, d_rows, "SELECT * FROM py_types (%s values) proxy vs direct" % conv_name)
        check_eq(p_count, d_count, "cursor.rowcount of SELECT * FROM py_types")
        check(p_desc is not None, "cursor.description through the proxy is None")
        check_eq(len(p_desc), len(d_desc), "number of columns in cursor.description")
        for p_col, d_col in zip(p_desc, d_desc):
            check_eq(len(p_col), 7, "cursor.description entry length for %r" % (d_col[0],))
            check_eq(p_col, d_col, "cursor.description for column %r (all 7 fields)" % (d_col[0],))
        for p_f, d_f in zip(p_meta, d_meta):
            check_eq(p_f, d_f, "column definition (name, org_name, table, org_table, db, "
                                "charsetnr, flags, type, length, decimals) for column %r" % (d_f[0],))

    # spot-check that the interesting values really made it (sanity of setup)
    d_rows = results[("direct", "converted")][0]
    check_eq(d_rows[4][1:], (None,) * 28, "all-NULL row (direct)")
    check_eq(d_rows[0][14], "0000-00-00", "zero DATE stored as '0000-00-00' (direct)")
    check_eq(str(d_rows[0][17]), "-35 days, 1:00:01", "TIME '-838:59:59' read directly (sanity)")


def check_transactions_rollback_commit():
    """3. conn.rollback() really rolls back and conn.commit() really commits."""
    run_direct("DROP TABLE IF EXISTS py_tx",
               "CREATE TABLE py_tx (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
    a = proxy_connect()  # PyMySQL default: autocommit off
    b = proxy_connect(autocommit=True)
    d = direct_connect(autocommit=True)
    try:
        check_eq(a.get_autocommit(), False, "PyMySQL autocommit flag (server status) on proxy connection")
        check_eq(scalar(a, "SELECT @@autocommit"), 0, "SELECT @@autocommit on the PyMySQL connection")
        with a.cursor() as cur:
            cur.execute("INSERT INTO py_tx VALUES (1, 'rolled back')")
            check_eq(cur.rowcount, 1, "rowcount of INSERT (id=1)")
        check_eq(scalar(a, "SELECT COUNT(*) FROM py_tx WHERE id = 1"), 1,
                 "row id=1 visible inside its own transaction before rollback")
        a.rollback()
        check_eq(scalar(a, "SELECT COUNT(*) FROM py_tx WHERE id = 1"), 0,
                 "row id=1 after conn.rollback(), same proxy connection")
        check_eq(scalar(b, "SELECT COUNT(*) FROM py_tx WHERE id = 1"), 0,
                 "row id=1 after conn.rollback(), second proxy connection")
        check_eq(scalar(d, "SELECT COUNT(*) FROM py_tx WHERE id = 1"), 0,
                 "row id=1 after conn.rollback(), direct connection")

        with a.cursor() as cur:
            cur.execute("INSERT INTO py_tx VALUES (2, 'committed')")
        a.commit()
        check_eq(query(b, "SELECT id, v FROM py_tx ORDER BY id"), ((2, "committed"),),
                 "py_tx contents after conn.commit(), second proxy connection")
        check_eq(query(d, "SELECT id, v FROM py_tx ORDER BY id"), ((2, "committed"),),
                 "py_tx contents after conn.commit(), direct connection")
        a.commit()  # end the read snapshot
        check_eq(query(a, "SELECT id, v FROM py_tx ORDER BY id"), ((2, "committed"),),
                 "py_tx contents after conn.commit(), same proxy connection")

        # rollback must also undo an UPDATE and a DELETE
        with a.cursor() as cur:
            cur.execute("UPDATE py_tx SET v = 'changed' WHERE id = 2")
            cur.execute("INSERT INTO py_tx VALUES (3, 'rolled back')")
        a.rollback()
        check_eq(query(d, "SELECT id, v FROM py_tx ORDER BY id"), ((2, "committed"),),
                 "py_tx after UPDATE+INSERT then conn.rollback(), direct connection")
        a.commit()
    finally:
        a.close()
        b.close()
        d.close()


def check_isolation():
    """4. Uncommitted rows of A are invisible to B until A commits."""
    run_direct("DROP TABLE IF EXISTS py_iso",
               "CREATE TABLE py_iso (id INT PRIMARY KEY) ENGINE=InnoDB")
    a = proxy_connect()  # autocommit off
    b = proxy_connect(autocommit=True)
    c = proxy_connect()  # autocommit off: takes a snapshot with its first read
    d = direct_connect(autocommit=True)
    try:
        try:
            isolation = scalar(d, "SELECT @@transaction_isolation")
        except pymysql.err.MySQLError:  # MariaDB before 11.1 only has tx_isolation
            isolation = scalar(d, "SELECT @@tx_isolation")
        check_eq(scalar(c, "SELECT COUNT(*) FROM py_iso"), 0, "py_iso initially empty (conn C snapshot)")
        with a.cursor() as cur:
            cur.execute("INSERT INTO py_iso VALUES (10)")
        check_eq(scalar(a, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 1,
                 "A sees its own uncommitted row")
        check_eq(scalar(b, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 0,
                 "B (proxy, autocommit) must not see A's uncommitted row")
        check_eq(scalar(d, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 0,
                 "direct connection must not see A's uncommitted row")
        a.commit()
        check_eq(scalar(b, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 1,
                 "B (proxy, autocommit) sees the row after A committed")
        if isolation in ("REPEATABLE-READ", "SERIALIZABLE"):
            check_eq(scalar(c, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 0,
                     "C's transaction started before A's commit (%s) must keep its snapshot" % isolation)
        c.commit()
        check_eq(scalar(c, "SELECT COUNT(*) FROM py_iso WHERE id = 10"), 1,
                 "C sees the row in a new transaction after commit()")
        c.commit()
    finally:
        for conn in (a, b, c, d):
            conn.close()


def check_multiple_result_sets():
    """5. Multi-statement text and a procedure returning two result sets."""
    run_direct("DROP PROCEDURE IF EXISTS py_two_sets",
               "CREATE PROCEDURE py_two_sets() BEGIN "
               "SELECT 1 AS a; SELECT 'x' AS b, 2.5 AS c UNION ALL SELECT 'y', NULL; END")
    sides = {}
    for side, connect in (("proxy", proxy_connect), ("direct", direct_connect)):
        conn = connect(client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1; SELECT 2, 3; DO 0")
                multi = collect_result_sets(cur)
            check_eq(scalar(conn, "SELECT 42"), 42, "%s: SELECT 42 after the multi-statement" % side)
            with conn.cursor() as cur:
                cur.execute("CALL py_two_sets()")
                call = collect_result_sets(cur)
            check_eq(scalar(conn, "SELECT 43"), 43, "%s: SELECT 43 after CALL" % side)
            sides[side] = (multi, call)
        finally:
            conn.close()

    p_multi, p_call = sides["proxy"]
    d_multi, d_call = sides["direct"]
    check_eq(len(d_multi), 3, "direct: number of results of 'SELECT 1; SELECT 2, 3; DO 0' (sanity)")
    check_eq(len(p_multi), len(d_multi), "number of results of 'SELECT 1; SELECT 2, 3; DO 0' via nextset()")
    for i, (p, d) in enumerate(zip(p_multi, d_multi)):
        check_eq(p, d, "result %d of 'SELECT 1; SELECT 2, 3; DO 0' (description/rows/rowcount/fields)" % i)
    check_eq([s["rows"] for s in p_multi], [((1,),), ((2, 3),), None],
             "rows of 'SELECT 1; SELECT 2, 3; DO 0'")

    check(len(d_call) >= 2, "direct: CALL py_two_sets() should give at least 2 results (sanity)")
    check_eq(len(p_call), len(d_call), "number of results of CALL py_two_sets() via nextset()")
    for i, (p, d) in enumerate(zip(p_call, d_call)):
        check_eq(p, d, "result %d of CALL py_two_sets() (description/rows/rowcount/fields)" % i)


def check_errors_keep_connection_usable():
    """6. 1064, 1146, 1062 and 4025 errors match direct and leave the connection usable."""
    run_direct("DROP TABLE IF EXISTS py_err",
               "CREATE TABLE py_err (id INT PRIMARY KEY, qty INT CHECK (qty > 0)) ENGINE=InnoDB",
               "INSERT INTO py_err VALUES (1, 1)")
    cases = [
        ("syntax error", "SELEC 1 FROM dual", 1064),
        ("unknown table", "SELECT * FROM py_no_such_table_xyz", 1146),
        ("duplicate key", "INSERT INTO py_err VALUES (1, 5)", 1062),
        ("CHECK constraint", "INSERT INTO py_err VALUES (2, 0)", 4025),
    ]
    for autocommit in (True, False):
        proxy = proxy_connect(autocommit=autocommit)
        direct = direct_connect(autocommit=True)
        try:
            for label, sql, code in cases:
                d_err = capture_error(direct, sql)
                check_eq(d_err[1], code, "direct error code for %s %r (sanity)" % (label, sql))
                p_err = capture_error(proxy, sql)
                check_eq(p_err, d_err, "%s %r (autocommit=%s): (exception class, code, message) "
                                       "proxy vs direct" % (label, sql, autocommit))
                check_eq(query(proxy, "SELECT 1"), ((1,),),
                         "SELECT 1 on the same proxy connection after the %s error" % label)
            if not autocommit:
                proxy.rollback()
        finally:
            proxy.close()
            direct.close()
    direct = direct_connect()
    try:
        check_eq(query(direct, "SELECT id, qty FROM py_err"), ((1, 1),),
                 "py_err unchanged after the failing statements")
    finally:
        direct.close()


def check_warnings():
    """7. SELECT 1/0 then SHOW WARNINGS reports 1365 Division by 0."""
    sides = {}
    for side, connect in (("proxy", proxy_connect), ("direct", direct_connect)):
        conn = connect(autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1/0")
                rows = cur.fetchall()
                warning_count = cur._result.warning_count
                cur.execute("SHOW WARNINGS")
                warnings = cur.fetchall()
                description = cur.description
            sides[side] = (rows, warning_count, warnings, description)
        finally:
            conn.close()
    p_rows, p_wc, p_warn, p_desc = sides["proxy"]
    d_rows, d_wc, d_warn, d_desc = sides["direct"]
    check_eq(p_rows, ((None,),), "SELECT 1/0 result through the proxy")
    check_eq(p_warn, (("Warning", 1365, "Division by 0"),),
             "SHOW WARNINGS after SELECT 1/0 through the proxy")
    check_eq(p_warn, d_warn, "SHOW WARNINGS proxy vs direct")
    check_eq(p_desc, d_desc, "SHOW WARNINGS cursor.description proxy vs direct")
    check_eq(p_wc, d_wc, "warning count in the EOF packet of SELECT 1/0, proxy vs direct")


def check_session_settings():
    """8. Session variables stay on their connection and do not leak."""
    fresh = direct_connect()
    try:
        default_tz, default_mode = query(fresh, "SELECT @@session.time_zone, @@session.sql_mode")[0]
        fresh_cur = fresh.cursor()
        fresh_cur.execute("SET time_zone='+08:00'")
        fresh_cur.execute("SET sql_mode='ANSI'")
        ansi_mode = scalar(fresh, "SELECT @@session.sql_mode")
    finally:
        fresh.close()
    check(default_tz != "+08:00" and default_mode != ansi_mode,
          "server defaults already equal the test values (tz=%r, mode=%r)" % (default_tz, default_mode))

    a = proxy_connect(autocommit=True)
    try:
        with a.cursor() as cur:
            cur.execute("SET time_zone='+08:00'")
            cur.execute("SET sql_mode='ANSI'")
        check_eq(query(a, "SELECT @@session.time_zone, @@session.sql_mode"), (("+08:00", ansi_mode),),
                 "A's session settings right after SET")

        b = proxy_connect(autocommit=True)
        try:
            check_eq(query(b, "SELECT @@session.time_zone, @@session.sql_mode"),
                     ((default_tz, default_mode),),
                     "B (new proxy connection while A is open) must have the server defaults")
            check_eq(scalar(b, "SELECT 'a' || 'b'"), 0,
                     "B: 'a' || 'b' is a logical OR (no PIPES_AS_CONCAT)")
        finally:
            b.close()

        for i in range(50):
            check_eq(scalar(a, "SELECT %s + 1", (i,)), i + 1, "A: filler query %d" % i)
        check_eq(query(a, "SELECT @@session.time_zone, @@session.sql_mode"), (("+08:00", ansi_mode),),
                 "A's session settings after 50 other queries")
        check_eq(scalar(a, "SELECT 'a' || 'b'"), "ab", "A: 'a' || 'b' under ANSI (PIPES_AS_CONCAT)")
        check_eq(scalar(a, "SELECT CONVERT_TZ('2000-01-01 00:00:00', '+00:00', @@session.time_zone)").isoformat(),
                 "2000-01-01T08:00:00", "A: CONVERT_TZ to the session time zone")
    finally:
        a.close()

    # After A is gone its backend connection may be reused: it must not carry A's state.
    for i in range(5):
        c = proxy_connect(autocommit=True)
        try:
            check_eq(query(c, "SELECT @@session.time_zone, @@session.sql_mode"),
                     ((default_tz, default_mode),),
                     "new proxy connection #%d after A closed must have the server defaults" % (i + 1))
        finally:
            c.close()


def check_large_result():
    """9. 10 000 rows from seq_1_to_10000, buffered and with SSCursor."""
    sql = "SELECT seq FROM seq_1_to_10000"
    direct = direct_connect()
    try:
        with direct.cursor() as cur:
            cur.execute(sql)
            d_rows = cur.fetchall()
            d_desc = cur.description
    finally:
        direct.close()
    check_eq(len(d_rows), 10000, "direct row count of %r (sanity)" % sql)

    proxy = proxy_connect()
    try:
        with proxy.cursor() as cur:
            cur.execute(sql)
            check_eq(cur.rowcount, 10000, "cursor.rowcount of %r through the proxy" % sql)
            p_rows = cur.fetchall()
            check_eq(cur.description, d_desc, "cursor.description of %r" % sql)
        check_eq(len(p_rows), 10000, "row count of %r through the proxy" % sql)
        check_rows_eq(p_rows, d_rows, "%r buffered, proxy vs direct" % sql)

        cur = proxy.cursor(pymysql.cursors.SSCursor)
        try:
            cur.execute(sql)
            check_eq(cur.description, d_desc, "SSCursor cursor.description of %r" % sql)
            ss_rows = []
            while True:
                row = cur.fetchone()
                if row is None:
                    break
                ss_rows.append(row)
        finally:
            cur.close()
        check_eq(len(ss_rows), 10000, "SSCursor row count of %r through the proxy" % sql)
        check_rows_eq(ss_rows, list(d_rows), "%r with SSCursor, proxy vs direct" % sql)
        check_eq(scalar(proxy, "SELECT 1"), 1, "SELECT 1 after the SSCursor")

        # abandon an unbuffered result half way: close() must drain it cleanly
        cur = proxy.cursor(pymysql.cursors.SSCursor)
        cur.execute(sql)
        check_eq(list(cur.fetchmany(10)), list(d_rows[:10]), "first 10 rows from SSCursor")
        cur.close()
        check_eq(scalar(proxy, "SELECT 2"), 2, "SELECT 2 after closing a half-read SSCursor")
    finally:
        proxy.close()


def check_large_values():
    """10. A 5 MiB random BLOB goes in and comes back byte-identical."""
    run_direct("DROP TABLE IF EXISTS py_big",
               "CREATE TABLE py_big (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB")
    payload = os.urandom(5 * 1024 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    proxy = proxy_connect()
    try:
        with proxy.cursor() as cur:
            cur.execute("INSERT INTO py_big VALUES (1, %s)", (payload,))
            check_eq(cur.rowcount, 1, "rowcount of the 5 MiB INSERT")
        proxy.commit()
        with proxy.cursor() as cur:
            cur.execute("SELECT b, LENGTH(b), SHA2(b, 256) FROM py_big WHERE id = 1")
            got, length, server_digest = cur.fetchone()
        proxy.commit()
        check_eq(server_digest, digest, "SHA2 of the stored BLOB computed by the server (write path)")
        check_eq(length, len(payload), "LENGTH of the stored BLOB")
        check(isinstance(got, bytes), "BLOB read through the proxy should be bytes, got %s" % type(got))
        check_eq(len(got), len(payload), "length of the BLOB read back through the proxy")
        check_eq(hashlib.sha256(got).hexdigest(), digest, "SHA-256 of the BLOB read back through the proxy")
        check_eq(scalar(proxy, "SELECT 1"), 1, "SELECT 1 after the large value")
    finally:
        proxy.close()
    direct = direct_connect()
    try:
        got_direct = scalar(direct, "SELECT b FROM py_big WHERE id = 1")
        check(got_direct == payload, "BLOB read directly differs from what was written through the proxy")
    finally:
        direct.close()


def check_ping_and_select_db():
    """11. ping(), select_db(DB) and select_db of an unknown database (1049)."""
    proxy = proxy_connect(autocommit=True)
    direct = direct_connect(autocommit=True)
    try:
        proxy.ping(reconnect=False)
        proxy.select_db(ARGS.db)
        check_eq(scalar(proxy, "SELECT DATABASE()"), ARGS.db, "SELECT DATABASE() after select_db(%r)" % ARGS.db)
        try:
            proxy.select_db("no_such_db_xyz")
        except pymysql.err.OperationalError as exc:
            p_err = (exc.args[0], exc.args[1])
        else:
            raise CheckFailed("select_db('no_such_db_xyz') through the proxy: expected error 1049, got success")
        check_eq(p_err, (1049, "Unknown database 'no_such_db_xyz'"),
                 "select_db('no_such_db_xyz') through the proxy (code, message)")
        try:
            direct.select_db("no_such_db_xyz")
        except pymysql.err.OperationalError as exc:
            d_err = (exc.args[0], exc.args[1])
        else:
            raise CheckFailed("select_db('no_such_db_xyz') directly unexpectedly succeeded (setup)")
        check_eq(p_err, d_err, "select_db('no_such_db_xyz') error, proxy vs direct")
        proxy.ping(reconnect=False)
        check_eq(scalar(proxy, "SELECT DATABASE()"), scalar(direct, "SELECT DATABASE()"),
                 "current database after the failed select_db, proxy vs direct")
        check_eq(scalar(proxy, "SELECT 1"), 1, "SELECT 1 after the failed select_db")
    finally:
        proxy.close()
        direct.close()


def check_wrong_password():
    """12. A wrong password gets 1045 Access denied."""
    try:
        conn = proxy_connect(password=ARGS.password + "_wrong")
    except pymysql.err.OperationalError as exc:
        code = exc.args[0]
        msg = exc.args[1] if len(exc.args) > 1 else ""
        check_eq(code, 1045, "error code for a wrong password through the proxy (message %r)" % msg)
        check("Access denied for user" in msg,
              "wrong-password message should contain 'Access denied for user', got %r" % msg)
        check("'%s'" % ARGS.user in msg,
              "wrong-password message should name the user %r, got %r" % (ARGS.user, msg))
    else:
        conn.close()
        raise CheckFailed("connecting through the proxy with a wrong password succeeded")
    # the proxy still accepts the right password afterwards
    conn = proxy_connect()
    try:
        check_eq(scalar(conn, "SELECT 1"), 1, "SELECT 1 on a good connection after the failed login")
    finally:
        conn.close()


CHECKS = [
    check_version_and_handshake,
    check_types_roundtrip,
    check_transactions_rollback_commit,
    check_isolation,
    check_multiple_result_sets,
    check_errors_keep_connection_usable,
    check_warnings,
    check_session_settings,
    check_large_result,
    check_large_values,
    check_ping_and_select_db,
    check_wrong_password,
]


def cleanup():
    try:
        run_direct("DROP TABLE IF EXISTS py_types", "DROP TABLE IF EXISTS py_tx",
                   "DROP TABLE IF EXISTS py_iso", "DROP TABLE IF EXISTS py_err",
                   "DROP TABLE IF EXISTS py_big", "DROP PROCEDURE IF EXISTS py_two_sets")
    except Exception as exc:  # cleanup failures are not check failures
        print("note: cleanup failed: %s" % exc)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy-port", type=int, required=True)
    parser.add_argument("--direct-port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--direct-user", default="rb")
    parser.add_argument("--direct-password", default="rb")
    ARGS = parser.parse_args()

    cleanup()
    passed = 0
    for number, fn in enumerate(CHECKS, 1):
        title = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        try:
            fn()
        except CheckFailed as exc:
            print("FAIL %s: %s" % (fn.__name__, title))
            print("  %s" % exc)
            print("%d passed, 1 failed" % passed)
            sys.exit(1)
        except Exception as exc:
            print("FAIL %s: %s" % (fn.__name__, title))
            print("  unexpected %s: %s" % (type(exc).__name__, exc))
            traceback.print_exc(file=sys.stdout)
            print("%d passed, 1 failed" % passed)
            sys.exit(1)
        passed += 1
        print("ok   %s" % title)
    cleanup()
    print("%d passed, 0 failed" % passed)


if __name__ == "__main__":
    main()
