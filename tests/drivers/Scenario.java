/*
 * MariaDB Connector/J end-to-end scenario for Rainbow Bridge.
 *
 * Drives the proxy with Debian's MariaDB Connector/J (libmariadb-java) and compares what it sees
 * with the values inserted and with a direct connection to the backend MariaDB (the oracle).
 * The scenario runs twice: with client-side prepared statements (the driver's default: the text
 * protocol, parameters interpolated by the driver) and with server-side prepared statements
 * (useServerPrepStmts=true: COM_STMT_PREPARE/EXECUTE and binary result rows). Each pass checks:
 *
 *   1. types     every common column type round-trips (parameterised INSERT and SELECT);
 *                proxy and direct return identical rows, column labels and type names
 *   2. params    a SELECT of placeholders of several types returns them unchanged
 *   3. tx        rollback hides a row, commit shows it on a second connection, autocommit
 *                off then on
 *   4. ps-reuse  one PreparedStatement executed 100 times, then closed
 *   5. big       10,000 rows, fully read and streamed (setFetchSize)
 *   6. errors    1146/42S02, 1062/23000, 1064/42000 leave the connection usable; an error
 *                inside a transaction does not end it
 *
 * Run (Java 17 source-file launch, no javac step; install with tests/drivers/install.sh):
 *   java -cp /usr/share/java/mariadb-java-client.jar tests/drivers/Scenario.java \
 *       --host 127.0.0.1 --port P --direct-port D --user U --password W --db DB \
 *       [--direct-user rb --direct-password rb]
 *
 * Exit status 0 and a last line "N passed, 0 failed" when every check holds; otherwise each
 * failure is printed (what, expected, got) and the status is 1.
 */

import java.math.BigDecimal;
import java.math.BigInteger;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;

public class Scenario {
    static String host = "127.0.0.1", user, password, db, directUser = "rb", directPassword = "rb";
    static int port, directPort;

    // ------------------------------------------------------------------ checks

    static int passed, failed;
    static String where = "";

    /** Stops the current step after a failure that later checks depend on. */
    static class Abort extends RuntimeException {
        Abort(String message) { super(message); }
    }

    static boolean fail(String message) {
        failed++;
        System.out.println("FAIL " + where + message);
        return false;
    }

    static String show(Object v) {
        String text;
        if (v == null) return "null";
        if (v instanceof byte[] b) {
            text = "byte[" + b.length + "] " + HexFormat.of().formatHex(b);
        } else if (v instanceof List<?> l) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : l) sb.append(sb.length() > 1 ? ", " : "").append(show(o));
            text = sb.append("]").toString();
        } else {
            text = v.getClass().getSimpleName() + " " + v;
        }
        return text.length() > 300 ? text.substring(0, 300) + "... (" + text.length() + " chars)" : text;
    }

    /** Equal values of the same class (Integer 1 and Long 1 are not equal); byte[] by content. */
    static boolean same(Object got, Object expected) {
        if (got == null || expected == null) return got == expected;
        if (got instanceof List<?> g && expected instanceof List<?> e) {
            if (g.size() != e.size()) return false;
            for (int i = 0; i < g.size(); i++) if (!same(g.get(i), e.get(i))) return false;
            return true;
        }
        return got.getClass() == expected.getClass() && Objects.deepEquals(got, expected);
    }

    static boolean eq(Object got, Object expected, String what) {
        if (same(got, expected)) {
            passed++;
            return true;
        }
        return fail(what + ": expected " + show(expected) + ", got " + show(got));
    }

    static boolean isTrue(boolean condition, String what) {
        if (condition) {
            passed++;
            return true;
        }
        return fail(what);
    }

    /** Row lists compared value by value, naming the first difference. */
    static boolean rowsEq(List<List<Object>> got, List<List<Object>> expected, String what) {
        if (got.size() != expected.size())
            return fail(what + ": expected " + expected.size() + " rows, got " + got.size());
        for (int i = 0; i < got.size(); i++) {
            List<Object> g = got.get(i), e = expected.get(i);
            if (g.size() != e.size())
                return fail(what + ": row " + i + ": expected " + e.size() + " columns, got " + g.size());
            for (int j = 0; j < g.size(); j++)
                if (!same(g.get(j), e.get(j)))
                    return fail(what + ": row " + i + " column " + j + ": expected " + show(e.get(j))
                            + ", got " + show(g.get(j)));
        }
        passed++;
        return true;
    }

    // ------------------------------------------------------------------ connections

    record Pass(String name, boolean serverPrep) {
        String table(String what) { return "drv_java_" + name + "_" + what; }

        String url(int p) {
            return "jdbc:mariadb://" + host + ":" + p + "/" + db + "?connectTimeout=10000"
                    + (serverPrep ? "&useServerPrepStmts=true" : "");
        }

        Connection proxy() throws SQLException { return DriverManager.getConnection(url(port), user, password); }

        Connection direct() throws SQLException {
            return DriverManager.getConnection(url(directPort), directUser, directPassword);
        }

        String protocol() { return serverPrep ? "server-side prepared" : "client-side prepared"; }
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }

    static PreparedStatement prepare(Connection c, String sql, Object... params) throws SQLException {
        PreparedStatement ps = c.prepareStatement(sql);
        for (int i = 0; i < params.length; i++) bind(ps, i + 1, params[i]);
        return ps;
    }

    static void bind(PreparedStatement ps, int i, Object v) throws SQLException {
        if (v == null) ps.setNull(i, Types.NULL);
        else if (v instanceof Integer x) ps.setInt(i, x);
        else if (v instanceof Long x) ps.setLong(i, x);
        else if (v instanceof BigInteger x) ps.setBigDecimal(i, new BigDecimal(x));
        else if (v instanceof BigDecimal x) ps.setBigDecimal(i, x);
        else if (v instanceof Float x) ps.setFloat(i, x);
        else if (v instanceof Double x) ps.setDouble(i, x);
        else if (v instanceof String x) ps.setString(i, x);
        else if (v instanceof byte[] x) ps.setBytes(i, x);
        else ps.setObject(i, v); // LocalDate, LocalDateTime (JDBC 4.2)
    }

    /** Parameterised update; returns the update count. */
    static int update(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = prepare(c, sql, params)) {
            return ps.executeUpdate();
        }
    }

    /** Parameterised query; every value read with getObject. */
    static List<List<Object>> query(Connection c, String sql, Object... params) throws SQLException {
        try (PreparedStatement ps = prepare(c, sql, params); ResultSet rs = ps.executeQuery()) {
            List<List<Object>> rows = new ArrayList<>();
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<Object> row = new ArrayList<>();
                for (int i = 1; i <= n; i++) row.add(rs.getObject(i));
                rows.add(row);
            }
            return rows;
        }
    }

    static Object scalar(Connection c, String sql, Object... params) throws SQLException {
        List<List<Object>> rows = query(c, sql, params);
        if (rows.size() != 1 || rows.get(0).size() != 1)
            throw new Abort(sql + ": expected a single value, got " + show(rows));
        return rows.get(0).get(0);
    }

    static long count(Connection c, String table, int id) throws SQLException {
        return ((Number) scalar(c, "SELECT COUNT(*) FROM " + table + " WHERE id = ?", id)).longValue();
    }

    static void selectOne(Connection c, String what) {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
            isTrue(rs.next() && rs.getInt(1) == 1 && !rs.next(), "SELECT 1 " + what + " returns one row with 1");
        } catch (SQLException e) {
            fail("SELECT 1 " + what + ": " + e);
        }
    }

    static void drop(Pass p, String... names) throws SQLException {
        try (Connection d = p.direct()) {
            for (String n : names) exec(d, "DROP TABLE IF EXISTS " + p.table(n));
        }
    }

    // ------------------------------------------------------------------ 1. types

    interface Reader { Object read(ResultSet rs, int i) throws SQLException; }

    /** A column: its DDL and how its value is read in the driver's native Java type. */
    record Col(String name, String ddl, Reader reader) {}

    static Reader OBJECT = ResultSet::getObject;
    // java.sql.Date/Timestamp depend on the JVM time zone and calendar: the java.time types do not
    static Reader LOCAL_DATE = (rs, i) -> rs.getObject(i, LocalDate.class);
    static Reader LOCAL_DATETIME = (rs, i) -> rs.getObject(i, LocalDateTime.class);
    // java.sql.Time holds neither a sign, nor hours past 23, nor fractions: a TIME is read as text;
    // the binary protocol gives 6 fraction digits, and a trailing "000" is cut to compare
    static Reader TIME_TEXT = (rs, i) -> {
        String s = rs.getString(i);
        return s != null && s.matches(".*\\.\\d{3}000") ? s.substring(0, s.length() - 3) : s;
    };
    // YEAR: getObject gives a java.sql.Date (yearIsDateType=true); getInt gives the year
    static Reader YEAR_INT = (rs, i) -> {
        int y = rs.getInt(i);
        return rs.wasNull() ? null : y;
    };

    static final Col[] COLS = {
        new Col("id", "INT NOT NULL PRIMARY KEY", OBJECT),
        new Col("c_tiny", "TINYINT", OBJECT),            // Integer
        new Col("c_small", "SMALLINT", OBJECT),          // Integer
        new Col("c_int", "INT", OBJECT),                 // Integer
        new Col("c_big", "BIGINT", OBJECT),              // Long
        new Col("c_ubig", "BIGINT UNSIGNED", OBJECT),    // BigInteger
        new Col("c_dec", "DECIMAL(20,6)", OBJECT),       // BigDecimal
        new Col("c_float", "FLOAT", OBJECT),             // Float
        new Col("c_double", "DOUBLE", OBJECT),           // Double
        new Col("c_date", "DATE", LOCAL_DATE),
        new Col("c_time", "TIME(3)", TIME_TEXT),
        new Col("c_dt", "DATETIME(6)", LOCAL_DATETIME),
        new Col("c_ts", "TIMESTAMP NULL", LOCAL_DATETIME),
        new Col("c_year", "YEAR", YEAR_INT),
        new Col("c_char", "CHAR(5)", OBJECT),            // String
        new Col("c_vc", "VARCHAR(100) CHARACTER SET utf8mb4", OBJECT),
        new Col("c_text", "TEXT", OBJECT),
        new Col("c_blob", "BLOB", OBJECT),               // byte[]
        new Col("c_bit", "BIT(8)", OBJECT),              // byte[]
        new Col("c_enum", "ENUM('a','b','c')", OBJECT),
        new Col("c_set", "SET('x','y','z')", OBJECT),    // String "x,z"
        new Col("c_json", "JSON", OBJECT),               // String (JSON is LONGTEXT in MariaDB)
        new Col("c_null", "INT NULL", OBJECT),
    };

    static byte[] bytes(int... v) {
        byte[] b = new byte[v.length];
        for (int i = 0; i < v.length; i++) b[i] = (byte) v[i];
        return b;
    }

    static byte[] allBytes(int times) {
        byte[] b = new byte[256 * times];
        for (int i = 0; i < b.length; i++) b[i] = (byte) i;
        return b;
    }

    static final String JSON_DOC =
            "{\"emoji\": \"\uD83D\uDE00\", \"cjk\": \"\u6f22\u5b57\", \"n\": [1, 2.5, null, true, false], \"nested\": {\"k\": \"v\"}}";

    /** The values inserted, one row per array, in COLS order; read back they must be equal. */
    static final Object[][] ROWS = {
        {1, -128, -32768, Integer.MIN_VALUE, Long.MIN_VALUE, BigInteger.ZERO,
         new BigDecimal("-12345678901234.567890"), -2.25f, -Double.MAX_VALUE,
         LocalDate.of(1000, 1, 1), "-12:34:56.789", LocalDateTime.of(2024, 2, 29, 23, 59, 59, 999_999_000),
         LocalDateTime.of(2000, 1, 1, 0, 0, 0), 1901,
         "", "\uD83D\uDE00 \u6f22\u5b57 \u304b\u306a \ud55c\uad6d\uc5b4 \uD83D\uDE80",
         "it's a \"test\"\n\\ \u00fcn\u00efc\u00f8d\u00e9", bytes(0x00, 0xff, 0x00, 0x01, 0xfe, 0x00),
         bytes(0x00), "a", "x,z", JSON_DOC, null},
        {2, 127, 32767, Integer.MAX_VALUE, Long.MAX_VALUE, new BigInteger("18446744073709551615"),
         new BigDecimal("99999999999999.999999"), 1.5f, Double.MAX_VALUE,
         LocalDate.of(9999, 12, 31), "838:59:59.000", LocalDateTime.of(9999, 12, 31, 23, 59, 59, 999_999_000),
         LocalDateTime.of(2038, 1, 18, 12, 0, 0), 2155,
         "abcde", "\u6f22\u5b57\u304b\u306a\ud55c\uad6d\uc5b4".repeat(10), "\uD83D\uDE00".repeat(1000),
         allBytes(4), bytes(0xff), "c", "x,y,z", "{}", 42},
        {3, null, null, null, null, null, null, null, null, null, null, null, null, null, null, null,
         null, null, null, null, null, null, null},
        {4, 0, -1, 1, -1L, BigInteger.ONE, new BigDecimal("-0.000001"), 0.0f, Double.MIN_NORMAL,
         LocalDate.of(2024, 2, 29), "-00:00:00.001", LocalDateTime.of(1970, 1, 1, 0, 0, 0, 1000),
         LocalDateTime.of(1999, 12, 31, 23, 59, 59), 2000,
         "a b", "plain ascii", "", bytes(0x00), bytes(0xa5), "b", "", "{\"a\": [true, null, \"x\\\"y\"]}", -7},
    };

    record Result(List<List<Object>> rows, List<List<Object>> strings, List<String> labels, List<String> types) {}

    static Result readTypes(Connection c, String table) throws SQLException {
        StringBuilder cols = new StringBuilder();
        for (Col col : COLS) cols.append(cols.length() > 0 ? ", " : "").append(col.name());
        try (PreparedStatement ps = prepare(c, "SELECT " + cols + " FROM " + table
                + " WHERE id BETWEEN ? AND ? ORDER BY id", 1, ROWS.length);
             ResultSet rs = ps.executeQuery()) {
            ResultSetMetaData md = rs.getMetaData();
            List<String> labels = new ArrayList<>(), types = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                labels.add(md.getColumnLabel(i));
                types.add(md.getColumnTypeName(i));
            }
            List<List<Object>> rows = new ArrayList<>(), strings = new ArrayList<>();
            while (rs.next()) {
                List<Object> row = new ArrayList<>(), text = new ArrayList<>();
                for (int i = 1; i <= COLS.length; i++) {
                    row.add(COLS[i - 1].reader().read(rs, i));
                    text.add(rs.getString(i));
                }
                rows.add(row);
                strings.add(text);
            }
            return new Result(rows, strings, labels, types);
        }
    }

    static void checkTypes(Pass p) throws SQLException {
        String table = p.table("types");
        drop(p, "types");
        StringBuilder ddl = new StringBuilder(), names = new StringBuilder(), marks = new StringBuilder();
        for (Col col : COLS) {
            String sep = ddl.length() > 0 ? ", " : "";
            ddl.append(sep).append(col.name()).append(' ').append(col.ddl());
            names.append(sep).append(col.name());
            marks.append(sep).append('?');
        }
        try (Connection c = p.proxy()) {
            exec(c, "CREATE TABLE " + table + " (" + ddl + ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            for (Object[] row : ROWS)
                eq(update(c, "INSERT INTO " + table + " (" + names + ") VALUES (" + marks + ")", row), 1,
                        "INSERT INTO " + table + " id=" + row[0] + " update count");
        }
        Result px, dx;
        try (Connection c = p.proxy()) { px = readTypes(c, table); }
        try (Connection c = p.direct()) { dx = readTypes(c, table); }

        List<String> expectedLabels = new ArrayList<>();
        for (Col col : COLS) expectedLabels.add(col.name());
        eq(px.labels(), expectedLabels, "column labels through the proxy");
        eq(px.labels(), dx.labels(), "column labels proxy vs direct");
        eq(px.types(), dx.types(), "column type names proxy vs direct");
        rowsEq(px.rows(), dx.rows(), "rows (native Java values) proxy vs direct");
        rowsEq(px.strings(), dx.strings(), "rows (getString of every column) proxy vs direct");
        eq(px.rows().size(), ROWS.length, "rows read back through the proxy");
        for (int r = 0; r < Math.min(px.rows().size(), ROWS.length); r++)
            for (int i = 0; i < COLS.length; i++)
                eq(px.rows().get(r).get(i), ROWS[r][i], "id=" + ROWS[r][0] + " " + COLS[i].name() + " through the proxy");
    }

    // ------------------------------------------------------------------ 2. parameters

    static void checkParams(Pass p) throws SQLException {
        String s = "it's \"quoted\" \\ back\\slash \\' \uD83D\uDE00";
        byte[] b = bytes(0x00, 0x01, '\'', '"', '\\', 0xff);
        BigDecimal umax = new BigDecimal("18446744073709551615");
        String sql = "SELECT ? AS i, ? AS s, ? AS n, CAST(? AS DECIMAL(12,4)) AS d, ? AS b, ? AS mn, ? AS mx, ? AS f";
        for (String side : new String[] {"proxy", "direct"}) {
            try (Connection c = side.equals("proxy") ? p.proxy() : p.direct();
                 PreparedStatement ps = prepare(c, sql, 12345, s, null, "-98765.4321", b, Long.MIN_VALUE, umax, 2.5);
                 ResultSet rs = ps.executeQuery()) {
                String what = "SELECT of 8 placeholders (" + side + ")";
                if (!isTrue(rs.next(), what + " returns a row")) continue;
                List<String> labels = new ArrayList<>();
                for (int i = 1; i <= 8; i++) labels.add(rs.getMetaData().getColumnLabel(i));
                eq(labels, List.of("i", "s", "n", "d", "b", "mn", "mx", "f"), what + ": column labels");
                eq(rs.getInt(1), 12345, what + ": int");
                eq(rs.getString(2), s, what + ": string with quotes and backslashes");
                eq(rs.getObject(3), null, what + ": NULL");
                eq(rs.getBigDecimal(4), new BigDecimal("-98765.4321"), what + ": decimal given as a string");
                eq(rs.getBytes(5), b, what + ": bytes");
                eq(rs.getLong(6), Long.MIN_VALUE, what + ": BIGINT min");
                eq(rs.getBigDecimal(7), umax, what + ": BIGINT UNSIGNED max");
                eq(rs.getDouble(8), 2.5, what + ": double");
                isTrue(!rs.next(), what + " returns only one row");
            }
        }
    }

    // ------------------------------------------------------------------ 3. transactions

    static void checkTransactions(Pass p) throws SQLException {
        String t = p.table("tx");
        drop(p, "tx");
        try (Connection d = p.direct(); Connection a = p.proxy(); Connection b = p.proxy()) {
            exec(d, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB");
            String insert = "INSERT INTO " + t + " VALUES (?, ?)";

            a.setAutoCommit(false); // begin
            update(a, insert, 1, "rolled back");
            eq(count(a, t, 1), 1L, "row 1 visible inside its own transaction");
            eq(count(b, t, 1), 0L, "row 1 not visible on a second proxy connection before rollback");
            a.rollback();
            eq(count(a, t, 1), 0L, "row 1 after rollback (same connection)");
            eq(count(b, t, 1), 0L, "row 1 after rollback (second proxy connection)");
            eq(count(d, t, 1), 0L, "row 1 after rollback (direct)");

            exec(a, "START TRANSACTION"); // an explicit begin, while autocommit is off
            update(a, insert, 2, "committed");
            eq(count(b, t, 2), 0L, "row 2 not visible on a second proxy connection before commit");
            a.commit();
            eq(query(b, "SELECT id, v FROM " + t + " ORDER BY id"), List.of(List.of(2, "committed")),
                    "table after commit (second proxy connection)");
            eq(query(d, "SELECT id, v FROM " + t + " ORDER BY id"), List.of(List.of(2, "committed")),
                    "table after commit (direct)");

            // autocommit is still off: a plain insert waits for a commit
            eq(scalar(a, "SELECT @@autocommit"), 0L, "SELECT @@autocommit with setAutoCommit(false)");
            update(a, insert, 3, "autocommit off");
            eq(count(b, t, 3), 0L, "row 3 (autocommit off, no commit yet) on a second proxy connection");
            a.setAutoCommit(true); // commits the open transaction
            eq(a.getAutoCommit(), true, "getAutoCommit() after setAutoCommit(true)");
            eq(scalar(a, "SELECT @@autocommit"), 1L, "SELECT @@autocommit after setAutoCommit(true)");
            eq(count(b, t, 3), 1L, "row 3 after autocommit was switched back on (second proxy connection)");
            update(a, insert, 4, "autocommit on");
            eq(count(b, t, 4), 1L, "row 4 inserted with autocommit on (second proxy connection)");
            eq(query(d, "SELECT id FROM " + t + " ORDER BY id"), List.of(List.of(2), List.of(3), List.of(4)),
                    "final table (direct)");
        }
    }

    // ------------------------------------------------------------------ 4. prepared-statement reuse

    static long globalStatus(String name) throws SQLException {
        try (Connection d = DriverManager.getConnection("jdbc:mariadb://" + host + ":" + directPort + "/" + db,
                directUser, directPassword);
             Statement st = d.createStatement();
             ResultSet rs = st.executeQuery("SHOW GLOBAL STATUS LIKE '" + name + "'")) {
            if (!rs.next()) throw new Abort("SHOW GLOBAL STATUS LIKE '" + name + "' returned nothing");
            return rs.getLong(2);
        }
    }

    static void checkPsReuse(Pass p) throws SQLException {
        String t = p.table("ps");
        drop(p, "ps");
        try (Connection d = p.direct()) {
            exec(d, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v VARCHAR(20), amt DECIMAL(10,2)) ENGINE=InnoDB");
            exec(d, "INSERT INTO " + t + " SELECT seq, CONCAT('row-', seq), seq / 4 FROM seq_1_to_100");
        }
        try (Connection c = p.proxy()) {
            long executesBefore = globalStatus("Com_stmt_execute");
            PreparedStatement ps = c.prepareStatement("SELECT id, v, amt, ? * 3 FROM " + t + " WHERE id = ? AND v = ?");
            int bad = 0;
            for (int i = 1; i <= 100; i++) {
                ps.setInt(1, i);
                ps.setInt(2, i);
                ps.setString(3, "row-" + i);
                List<Object> got = new ArrayList<>();
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) got.add(List.of(rs.getInt(1), rs.getString(2), rs.getBigDecimal(3), rs.getLong(4)));
                }
                List<Object> want = List.of(List.of(i, "row-" + i, BigDecimal.valueOf(i * 25L, 2), i * 3L));
                if (!same(got, want)) {
                    bad++;
                    fail("execution " + i + " of the prepared SELECT: expected " + show(want) + ", got " + show(got));
                }
            }
            eq(bad, 0, "prepared SELECT executed 100 times: executions with a wrong result");
            if (p.serverPrep()) {
                long executes = globalStatus("Com_stmt_execute") - executesBefore;
                isTrue(executes >= 100, "the backend counted " + executes
                        + " COM_STMT_EXECUTE for 100 server-side executions (expected at least 100)");
            }
            ps.setInt(1, 1);
            ps.setInt(2, 1);
            ps.setString(3, "row-2");
            try (ResultSet rs = ps.executeQuery()) {
                eq(rs.next(), false, "prepared SELECT with parameters that match no row");
            }
            ps.close(); // deallocates the statement (or returns it to the driver's cache)
            eq(ps.isClosed(), true, "PreparedStatement.isClosed() after close()");
            selectOne(c, "after closing the prepared statement");
            eq(scalar(c, "SELECT v FROM " + t + " WHERE id = ?", 7), "row-7", "a new prepared statement after closing the first");
        }
    }

    // ------------------------------------------------------------------ 5. a 10k-row result

    static final int N_BIG = 10_000;

    static void verifyBig(List<List<Object>> rows, String how) {
        eq(rows.size(), N_BIG, how + ": row count");
        long sum = 0;
        for (List<Object> r : rows) sum += (Integer) r.get(0);
        eq(sum, (long) N_BIG * (N_BIG + 1) / 2, how + ": sum of ids");
        if (!rows.isEmpty()) {
            eq(rows.get(0), List.of(1, "row-00001"), how + ": first row");
            eq(rows.get(rows.size() - 1), List.of(N_BIG, String.format("row-%05d", N_BIG)), how + ": last row");
        }
    }

    static List<List<Object>> readAll(ResultSet rs) throws SQLException {
        List<List<Object>> rows = new ArrayList<>();
        while (rs.next()) rows.add(List.of(rs.getObject(1), rs.getObject(2)));
        return rows;
    }

    static void checkBig(Pass p) throws SQLException {
        String t = p.table("big");
        drop(p, "big");
        try (Connection c = p.proxy()) {
            exec(c, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4");
            String insert = "INSERT INTO " + t + " (id, v) VALUES " + String.join(", ", java.util.Collections.nCopies(1000, "(?, ?)"));
            try (PreparedStatement ps = c.prepareStatement(insert)) {
                for (int start = 1; start <= N_BIG; start += 1000) {
                    for (int k = 0; k < 1000; k++) {
                        ps.setInt(2 * k + 1, start + k);
                        ps.setString(2 * k + 2, String.format("row-%05d", start + k));
                    }
                    eq(ps.executeUpdate(), 1000, "multi-row INSERT of ids " + start + ".." + (start + 999) + " update count");
                }
            }
            String select = "SELECT id, v FROM " + t + " WHERE id > ? ORDER BY id";
            try (PreparedStatement ps = prepare(c, select, 0); ResultSet rs = ps.executeQuery()) {
                verifyBig(readAll(rs), "SELECT of 10,000 rows (" + p.protocol() + ")");
            }
            List<List<Object>> streamed;
            try (PreparedStatement ps = prepare(c, select, 0)) {
                ps.setFetchSize(100); // streaming: rows are read from the socket 100 at a time
                try (ResultSet rs = ps.executeQuery()) {
                    streamed = readAll(rs);
                }
            }
            verifyBig(streamed, "SELECT of 10,000 rows streamed with setFetchSize(100) (" + p.protocol() + ")");
            selectOne(c, "after the streamed 10,000-row result");
            try (Connection d = p.direct(); PreparedStatement ps = prepare(d, select, 0); ResultSet rs = ps.executeQuery()) {
                rowsEq(streamed, readAll(rs), "10,000 rows proxy (streamed) vs direct");
            }
        }
    }

    // ------------------------------------------------------------------ 6. errors

    /** (code, SQLSTATE, message without the connection id) of a statement expected to fail. */
    static List<Object> error(Connection c, boolean prepared, String sql, Object... params) {
        try {
            if (prepared) {
                try (PreparedStatement ps = prepare(c, sql, params)) {
                    ps.execute();
                }
            } else {
                exec(c, sql);
            }
        } catch (SQLException e) {
            String msg = e.getMessage() == null ? "" : e.getMessage().replaceFirst("^\\(conn=\\d+\\) ", "");
            return List.of(e.getErrorCode(), String.valueOf(e.getSQLState()), msg);
        }
        throw new Abort(sql + ": expected an error, but it succeeded");
    }

    static void checkErrors(Pass p) throws SQLException {
        String t = p.table("err");
        drop(p, "err");
        try (Connection d = p.direct(); Connection c = p.proxy()) {
            exec(d, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB");
            exec(d, "INSERT INTO " + t + " VALUES (1, 'one')");
            Object[][] cases = {
                {"missing table", "SELECT * FROM " + p.table("no_such_table") + " WHERE id = ?", 1146, "42S02", "SELECT * FROM " + p.table("no_such_table") + " WHERE id = 1"},
                {"duplicate key", "INSERT INTO " + t + " VALUES (?, 'again')", 1062, "23000", "INSERT INTO " + t + " VALUES (1, 'again')"},
                {"syntax error", "SELEC ? FROM dual", 1064, "42000", "SELEC 1 FROM dual"},
            };
            for (boolean prepared : new boolean[] {false, true}) {
                String how = prepared ? "PreparedStatement" : "Statement";
                for (Object[] k : cases) {
                    String label = (String) k[0], sql = prepared ? (String) k[1] : (String) k[4];
                    List<Object> got = prepared ? error(c, true, sql, 1) : error(c, false, sql);
                    List<Object> want = prepared ? error(d, true, sql, 1) : error(d, false, sql);
                    eq(got.get(0), k[2], how + " " + label + ": error code");
                    eq(got.get(1), k[3], how + " " + label + ": SQLSTATE");
                    eq(got, want, how + " " + label + ": (code, SQLSTATE, message) proxy vs direct");
                    selectOne(c, "on the same connection after the " + how + " " + label + " error");
                }
            }

            // an error inside a transaction does not end it
            c.setAutoCommit(false);
            update(c, "INSERT INTO " + t + " VALUES (?, ?)", 10, "in tx");
            eq(error(c, true, "INSERT INTO " + t + " VALUES (?, ?)", 1, "dup").get(0), 1062,
                    "duplicate key inside a transaction: error code");
            eq(((Number) scalar(c, "SELECT @@in_transaction")).longValue(), 1L, "SELECT @@in_transaction after the error");
            eq(scalar(c, "SELECT v FROM " + t + " WHERE id = ?", 10), "in tx",
                    "the transaction's earlier insert is still there after the error");
            eq(count(d, t, 10), 0L, "the transaction's insert is not visible directly before the commit");
            c.commit();
            eq(query(d, "SELECT id, v FROM " + t + " ORDER BY id"), List.of(List.of(1, "one"), List.of(10, "in tx")),
                    "table after the commit (direct)");
        }
    }

    // ------------------------------------------------------------------ main

    interface Step { void run(Pass p) throws Exception; }

    public static void main(String[] args) throws Exception {
        for (int i = 0; i + 1 < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
                case "--host" -> host = v;
                case "--port" -> port = Integer.parseInt(v);
                case "--direct-port" -> directPort = Integer.parseInt(v);
                case "--user" -> user = v;
                case "--password" -> password = v;
                case "--db" -> db = v;
                case "--direct-user" -> directUser = v;
                case "--direct-password" -> directPassword = v;
                default -> { System.err.println("unknown argument " + args[i]); System.exit(2); }
            }
        }
        if (port == 0 || directPort == 0 || user == null || password == null || db == null) {
            System.err.println("usage: Scenario --host H --port P --direct-port D --user U --password W --db DB"
                    + " [--direct-user rb --direct-password rb]");
            System.exit(2);
        }
        try (Connection d = new Pass("cli", false).direct()) {
            System.out.println("MariaDB Connector/J " + d.getMetaData().getDriverVersion() + ", Java "
                    + System.getProperty("java.version"));
        }
        Object[][] steps = {
            {"types", (Step) Scenario::checkTypes},
            {"params", (Step) Scenario::checkParams},
            {"tx", (Step) Scenario::checkTransactions},
            {"ps-reuse", (Step) Scenario::checkPsReuse},
            {"big", (Step) Scenario::checkBig},
            {"errors", (Step) Scenario::checkErrors},
        };
        for (Pass p : new Pass[] {new Pass("cli", false), new Pass("srv", true)}) {
            for (Object[] s : steps) {
                where = "[" + p.name() + " " + s[0] + "] ";
                int p0 = passed, f0 = failed;
                try {
                    ((Step) s[1]).run(p);
                } catch (Abort e) {
                    fail(e.getMessage());
                } catch (Exception e) {
                    fail("unexpected " + e);
                    e.printStackTrace(System.out);
                }
                System.out.printf("%s %s %s: %d checks, %d failed%n", failed == f0 ? "ok  " : "FAIL", p.name(), s[0],
                        passed - p0 + failed - f0, failed - f0);
            }
            where = "";
            try {
                drop(p, "types", "tx", "ps", "big", "err");
            } catch (SQLException e) {
                System.out.println("note: cleanup of " + p.name() + " failed: " + e);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
