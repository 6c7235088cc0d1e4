#!/usr/bin/env node
/*
 * mysql2 (Node.js) end-to-end scenario for Rainbow Bridge.
 *
 * Drives the proxy with mysql2 and compares what it sees with the values inserted and with a
 * direct connection to the backend MariaDB (the oracle). The scenario runs twice: with query()
 * (text protocol, placeholders filled in by the driver) and with execute() (binary protocol,
 * server-side prepared statements). Each pass checks:
 *
 *   1. types     every common column type round-trips (parameterised INSERT and SELECT);
 *                proxy and direct return identical rows and column definitions
 *   2. params    a SELECT of placeholders of several types returns them unchanged
 *   3. tx        rollback hides a row, commit shows it on a second connection, autocommit
 *                off then on
 *   4. ps-reuse  one statement executed 100 times (prepare()d in the execute pass), then closed
 *   5. big       10,000 rows, buffered and streamed (.stream())
 *   6. errors    1146/42S02, 1062/23000, 1064/42000 leave the connection usable; an error
 *                inside a transaction does not end it
 *
 * Driver options: supportBigNumbers (BIGINTs beyond 2^53 come back as strings, others as
 * numbers), dateStrings (DATE/DATETIME/TIMESTAMP as strings: no time zone, microseconds kept).
 * mysql2 documents DECIMAL as strings, TIME as strings, BLOB/BIT as Buffers, JSON parsed.
 *
 * Run (install with tests/drivers/install.sh, which runs npm ci here):
 *   node tests/drivers/node/scenario.js --host 127.0.0.1 --port P --direct-port D \
 *       --user U --password W --db DB [--direct-user rb --direct-password rb]
 *
 * Exit status 0 and a last line "N passed, 0 failed" when every check holds; otherwise each
 * failure is printed (what, expected, got) and the status is 1.
 */
'use strict';

const util = require('node:util');
let mysql;
try {
  mysql = require('mysql2/promise');
} catch (e) {
  console.log('mysql2 is not installed (tests/drivers/install.sh runs npm ci in tests/drivers/node)');
  console.log('0 passed, 1 failed');
  process.exit(1);
}

// ------------------------------------------------------------------ arguments

const ARGS = { host: '127.0.0.1', directUser: 'rb', directPassword: 'rb' };
{
  const names = {
    '--host': 'host', '--port': 'port', '--direct-port': 'directPort', '--user': 'user',
    '--password': 'password', '--db': 'db', '--direct-user': 'directUser',
    '--direct-password': 'directPassword',
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!names[argv[i]] || argv[i + 1] === undefined) {
      console.error(`unknown or incomplete argument ${argv[i]}`);
      process.exit(2);
    }
    ARGS[names[argv[i]]] = argv[i + 1];
  }
  for (const k of ['port', 'directPort', 'user', 'password', 'db']) {
    if (ARGS[k] === undefined) {
      console.error('usage: scenario.js --host H --port P --direct-port D --user U --password W --db DB'
        + ' [--direct-user rb --direct-password rb]');
      process.exit(2);
    }
  }
}

// ------------------------------------------------------------------ checks

let passed = 0;
let failed = 0;
let where = '';

class Abort extends Error {}

function show(v) {
  let text;
  if (Buffer.isBuffer(v)) text = `Buffer[${v.length}] ${v.toString('hex')}`;
  else text = `${v === null ? 'null' : typeof v} ${util.inspect(v, { depth: 4, breakLength: Infinity })}`;
  return text.length > 300 ? `${text.slice(0, 300)}... (${text.length} chars)` : text;
}

function fail(message) {
  failed++;
  console.log(`FAIL ${where}${message}`);
  return false;
}

/** Deep, strict equality: 1 and '1' differ, Buffers by content. */
function eq(got, expected, what) {
  if (util.isDeepStrictEqual(got, expected)) {
    passed++;
    return true;
  }
  return fail(`${what}: expected ${show(expected)}, got ${show(got)}`);
}

function isTrue(cond, what) {
  if (cond) {
    passed++;
    return true;
  }
  return fail(what);
}

/** Row lists compared value by value, naming the first difference. */
function rowsEq(got, expected, what) {
  if (got.length !== expected.length) return fail(`${what}: expected ${expected.length} rows, got ${got.length}`);
  for (let i = 0; i < got.length; i++) {
    const g = Object.entries(got[i]);
    const e = Object.entries(expected[i]);
    if (!util.isDeepStrictEqual(g.map((x) => x[0]), e.map((x) => x[0]))) {
      return fail(`${what}: row ${i}: expected columns ${show(e.map((x) => x[0]))}, got ${show(g.map((x) => x[0]))}`);
    }
    for (let j = 0; j < g.length; j++) {
      if (!util.isDeepStrictEqual(g[j][1], e[j][1])) {
        return fail(`${what}: row ${i} column ${g[j][0]}: expected ${show(e[j][1])}, got ${show(g[j][1])}`);
      }
    }
  }
  passed++;
  return true;
}

// ------------------------------------------------------------------ connections

const OPTIONS = { supportBigNumbers: true, dateStrings: true, charset: 'utf8mb4', connectTimeout: 10000 };

class Pass {
  constructor(name, method) {
    this.name = name; // table-name part and report label
    this.method = method; // 'query' (text protocol) or 'execute' (binary protocol)
  }

  table(what) { return `drv_node_${this.name}_${what}`; }

  proxy() {
    return mysql.createConnection({ ...OPTIONS, host: ARGS.host, port: +ARGS.port, user: ARGS.user,
      password: ARGS.password, database: ARGS.db });
  }

  direct() {
    return mysql.createConnection({ ...OPTIONS, host: ARGS.host, port: +ARGS.directPort, user: ARGS.directUser,
      password: ARGS.directPassword, database: ARGS.db });
  }

  /** A parameterised statement in this pass's protocol: [rows or result header, fields]. */
  run(conn, sql, params = []) { return conn[this.method](sql, params); }
}

async function withConn(open, fn) {
  const conn = await open();
  try {
    return await fn(conn);
  } finally {
    await conn.end();
  }
}

async function scalar(p, conn, sql, params = []) {
  const [rows] = await p.run(conn, sql, params);
  if (!Array.isArray(rows) || rows.length !== 1 || Object.keys(rows[0]).length !== 1) {
    throw new Abort(`${sql}: expected a single value, got ${show(rows)}`);
  }
  return Object.values(rows[0])[0];
}

async function selectOne(conn, what) {
  try {
    const [rows] = await conn.query('SELECT 1 AS one');
    eq(rows, [{ one: 1 }], `SELECT 1 ${what}`);
  } catch (e) {
    fail(`SELECT 1 ${what}: ${e.message}`);
  }
}

async function drop(p, ...names) {
  await withConn(() => p.direct(), async (d) => {
    for (const n of names) await d.query(`DROP TABLE IF EXISTS ${p.table(n)}`);
  });
}

// ------------------------------------------------------------------ 1. types

const COLUMNS = [
  ['id', 'INT NOT NULL PRIMARY KEY'],
  ['c_tiny', 'TINYINT'],
  ['c_small', 'SMALLINT'],
  ['c_int', 'INT'],
  ['c_big', 'BIGINT'],
  ['c_ubig', 'BIGINT UNSIGNED'],
  ['c_dec', 'DECIMAL(20,6)'],
  ['c_float', 'FLOAT'],
  ['c_double', 'DOUBLE'],
  ['c_date', 'DATE'],
  ['c_time', 'TIME(3)'],
  ['c_dt', 'DATETIME(6)'],
  ['c_ts', 'TIMESTAMP NULL'],
  ['c_year', 'YEAR'],
  ['c_char', 'CHAR(5)'],
  ['c_vc', 'VARCHAR(100) CHARACTER SET utf8mb4'],
  ['c_text', 'TEXT'],
  ['c_blob', 'BLOB'],
  ['c_bit', 'BIT(8)'],
  ['c_enum', "ENUM('a','b','c')"],
  ['c_set', "SET('x','y','z')"],
  ['c_json', 'JSON'],
  ['c_null', 'INT NULL'],
];
const NAMES = COLUMNS.map((c) => c[0]);

const JSON_DOC = { emoji: '\u{1F600}', cjk: '\u6f22\u5b57', n: [1, 2.5, null, true, false], nested: { k: 'v' } };
const ALL_BYTES = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));

// The parameters inserted, one array per row in NAMES order. BIGINTs are given as BigInt,
// JSON as its text, dates and times as strings (see dateStrings).
const ROWS = [
  [1, -128, -32768, -2147483648, -9223372036854775808n, 0n, '-12345678901234.567890', -2.25,
    -1.7976931348623157e308, '1000-01-01', '-12:34:56.789', '2024-02-29 23:59:59.999999',
    '2000-01-01 00:00:00', 1901, '', '\u{1F600} \u6f22\u5b57 \u304b\u306a \ud55c\uad6d\uc5b4 \u{1F680}',
    'it\'s a "test"\n\\ \u00fcn\u00efc\u00f8d\u00e9', Buffer.from([0x00, 0xff, 0x00, 0x01, 0xfe, 0x00]),
    Buffer.from([0x00]), 'a', 'x,z', JSON.stringify(JSON_DOC), null],
  [2, 127, 32767, 2147483647, 9223372036854775807n, 18446744073709551615n, '99999999999999.999999', 1.5,
    1.7976931348623157e308, '9999-12-31', '838:59:59.000', '9999-12-31 23:59:59.999999',
    '2038-01-18 12:00:00', 2155, 'abcde', '\u6f22\u5b57\u304b\u306a\ud55c\uad6d\uc5b4'.repeat(10),
    '\u{1F600}'.repeat(1000), ALL_BYTES, Buffer.from([0xff]), 'c', 'x,y,z', '{}', 42],
  [3, ...new Array(22).fill(null)],
  [4, 0, -1, 1, -1n, 1n, '-0.000001', 0, 2.2250738585072014e-308, '2024-02-29', '-00:00:00.001',
    '1970-01-01 00:00:00.000001', '1999-12-31 23:59:59', 2000, 'a b', 'plain ascii', '',
    Buffer.from([0x00]), Buffer.from([0xa5]), 'b', '', '{"a": [true, null, "x\\"y"]}', -7],
];

/** What mysql2 returns for an inserted value (its documented conversions). */
function expectedValue(p, name, value) {
  if (value === null) return null;
  if (name === 'c_time' && p.method === 'execute') {
    // a binary-protocol TIME without fraction is sent without one, and mysql2 then writes none
    return value.replace(/\.0+$/, '');
  }
  if (typeof value === 'bigint') {
    // supportBigNumbers: a number when it is exact, a string beyond 2^53
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value) : value.toString();
  }
  if (name === 'c_json') return JSON.parse(value);
  return value;
}

function fieldMeta(fields) {
  return fields.map((f) => ({ name: f.name, orgName: f.orgName, table: f.table, orgTable: f.orgTable,
    schema: f.schema, characterSet: f.characterSet, columnLength: f.columnLength,
    columnType: f.columnType, flags: f.flags, decimals: f.decimals }));
}

async function checkTypes(p) {
  const table = p.table('types');
  await drop(p, 'types');
  const ddl = `CREATE TABLE ${table} (${COLUMNS.map((c) => c.join(' ')).join(', ')}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;
  const insert = `INSERT INTO ${table} (${NAMES.join(', ')}) VALUES (${NAMES.map(() => '?').join(', ')})`;
  await withConn(() => p.proxy(), async (c) => {
    await c.query(ddl);
    for (const row of ROWS) {
      const [res] = await p.run(c, insert, row);
      eq(res.affectedRows, 1, `INSERT INTO ${table} id=${row[0]} affectedRows`);
    }
  });
  const select = `SELECT ${NAMES.join(', ')} FROM ${table} WHERE id BETWEEN ? AND ? ORDER BY id`;
  const [pRows, pFields] = await withConn(() => p.proxy(), (c) => p.run(c, select, [1, ROWS.length]));
  const [dRows, dFields] = await withConn(() => p.direct(), (c) => p.run(c, select, [1, ROWS.length]));

  // MariaDB's extended metadata (the `json` format of a JSON column) reaches mysql2 through
  // the proxy as it does directly, so JSON columns arrive parsed.
  const jsonAt = pFields.findIndex((f) => f.name === 'c_json');
  eq(jsonAt >= 0 && pFields[jsonAt].extendedFormat, 'json', 'extended metadata of the JSON column through the proxy');
  eq(pFields.map((f) => f.name), NAMES, 'column names through the proxy');
  eq(fieldMeta(pFields), fieldMeta(dFields), 'column definitions (name, org name, table, schema, charset, length, type, flags, decimals) proxy vs direct');
  rowsEq(pRows, dRows, 'rows proxy vs direct');
  eq(pRows.length, ROWS.length, 'rows read back through the proxy');
  pRows.forEach((got, r) => {
    NAMES.forEach((name, i) => {
      eq(got[name], expectedValue(p, name, ROWS[r][i]), `id=${ROWS[r][0]} ${name} through the proxy`);
    });
  });
}

// ------------------------------------------------------------------ 2. parameters

async function checkParams(p) {
  const s = 'it\'s "quoted" \\ back\\slash \\\' \u{1F600}';
  const b = Buffer.from([0x00, 0x01, 0x27, 0x22, 0x5c, 0xff]);
  const sql = 'SELECT ? AS i, ? AS s, ? AS n, CAST(? AS DECIMAL(12,4)) AS d, ? AS b, ? AS mn, ? AS mx, ? AS f';
  const params = [12345, s, null, '-98765.4321', b, -9223372036854775808n, 18446744073709551615n, 2.5];
  for (const side of ['proxy', 'direct']) {
    const [rows, fields] = await withConn(() => p[side](), (c) => p.run(c, sql, params));
    const what = `SELECT of 8 placeholders (${side})`;
    eq(fields.map((f) => f.name), ['i', 's', 'n', 'd', 'b', 'mn', 'mx', 'f'], `${what}: column names`);
    eq(rows, [{
      i: 12345,
      s,
      n: null,
      d: '-98765.4321', // DECIMAL comes back as a string
      b,
      mn: '-9223372036854775808', // beyond 2^53: a string (supportBigNumbers)
      mx: '18446744073709551615',
      // execute() binds 2.5 as a DOUBLE; query() writes the literal 2.5, which MariaDB types as DECIMAL
      f: p.method === 'execute' ? 2.5 : '2.5',
    }], `${what}: the row`);
  }
}

// ------------------------------------------------------------------ 3. transactions

async function checkTransactions(p) {
  const t = p.table('tx');
  await drop(p, 'tx');
  const d = await p.direct();
  const a = await p.proxy();
  const b = await p.proxy();
  try {
    await d.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB`);
    const insert = `INSERT INTO ${t} VALUES (?, ?)`;
    const count = (c, id) => scalar(p, c, `SELECT COUNT(*) AS n FROM ${t} WHERE id = ?`, [id]);
    const all = async (c) => (await c.query(`SELECT id, v FROM ${t} ORDER BY id`))[0];

    await a.beginTransaction();
    await p.run(a, insert, [1, 'rolled back']);
    eq(await count(a, 1), 1, 'row 1 visible inside its own transaction');
    eq(await count(b, 1), 0, 'row 1 not visible on a second proxy connection before rollback');
    await a.rollback();
    eq(await count(a, 1), 0, 'row 1 after rollback (same connection)');
    eq(await count(b, 1), 0, 'row 1 after rollback (second proxy connection)');
    eq(await count(d, 1), 0, 'row 1 after rollback (direct)');

    await a.beginTransaction();
    await p.run(a, insert, [2, 'committed']);
    eq(await count(b, 2), 0, 'row 2 not visible on a second proxy connection before commit');
    await a.commit();
    eq(await all(b), [{ id: 2, v: 'committed' }], 'table after commit (second proxy connection)');
    eq(await all(d), [{ id: 2, v: 'committed' }], 'table after commit (direct)');

    await a.query('SET autocommit = 0');
    eq(await scalar(p, a, 'SELECT @@autocommit AS ac'), 0, 'SELECT @@autocommit after SET autocommit = 0');
    await p.run(a, insert, [3, 'autocommit off']);
    eq(await count(b, 3), 0, 'row 3 (autocommit off, no commit yet) on a second proxy connection');
    await a.query('SET autocommit = 1'); // commits the open transaction
    eq(await scalar(p, a, 'SELECT @@autocommit AS ac'), 1, 'SELECT @@autocommit after SET autocommit = 1');
    eq(await count(b, 3), 1, 'row 3 after autocommit was switched back on (second proxy connection)');
    await p.run(a, insert, [4, 'autocommit on']);
    eq(await count(b, 4), 1, 'row 4 inserted with autocommit on (second proxy connection)');
    eq((await all(d)).map((r) => r.id), [2, 3, 4], 'final table (direct)');
  } finally {
    await Promise.all([a.end(), b.end(), d.end()]);
  }
}

// ------------------------------------------------------------------ 4. prepared-statement reuse

async function globalStatus(p, name) {
  return withConn(() => p.direct(), async (d) => {
    const [rows] = await d.query(`SHOW GLOBAL STATUS LIKE '${name}'`);
    if (rows.length !== 1) throw new Abort(`SHOW GLOBAL STATUS LIKE '${name}' returned ${show(rows)}`);
    return Number(rows[0].Value);
  });
}

async function checkPsReuse(p) {
  const t = p.table('ps');
  await drop(p, 'ps');
  await withConn(() => p.direct(), async (d) => {
    await d.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, v VARCHAR(20), amt DECIMAL(10,2)) ENGINE=InnoDB`);
    await d.query(`INSERT INTO ${t} SELECT seq, CONCAT('row-', seq), seq / 4 FROM seq_1_to_100`);
  });
  await withConn(() => p.proxy(), async (c) => {
    const sql = `SELECT id, v, amt, ? * 3 AS triple FROM ${t} WHERE id = ? AND v = ?`;
    const before = await globalStatus(p, 'Com_stmt_execute');
    // execute pass: one explicit server-side statement; query pass: the same text each time
    const stmt = p.method === 'execute' ? await c.prepare(sql) : null;
    const exec = async (params) => (stmt ? stmt.execute(params) : c.query(sql, params));
    let bad = 0;
    for (let i = 1; i <= 100; i++) {
      const [rows] = await exec([i, i, `row-${i}`]);
      // ? * 3: a DOUBLE times 3 (execute binds numbers as DOUBLE), an integer literal in query()
      const want = [{ id: i, v: `row-${i}`, amt: (i / 4).toFixed(2), triple: i * 3 }];
      if (!util.isDeepStrictEqual(rows, want)) {
        bad++;
        fail(`execution ${i} of the statement: expected ${show(want)}, got ${show(rows)}`);
      }
    }
    eq(bad, 0, 'statement executed 100 times: executions with a wrong result');
    if (stmt) {
      const executes = (await globalStatus(p, 'Com_stmt_execute')) - before;
      isTrue(executes >= 100, `the backend counted ${executes} COM_STMT_EXECUTE for 100 executions of a prepared statement (expected at least 100)`);
    }
    eq((await exec([1, 1, 'row-2']))[0], [], 'the statement with parameters that match no row');
    if (stmt) stmt.close(); // COM_STMT_CLOSE (no reply)
    await selectOne(c, 'after closing the prepared statement');
    eq(await scalar(p, c, `SELECT v FROM ${t} WHERE id = ?`, [7]), 'row-7', 'a new statement after closing the first');
  });
}

// ------------------------------------------------------------------ 5. a 10k-row result

const N_BIG = 10000;

function verifyBig(rows, how) {
  eq(rows.length, N_BIG, `${how}: row count`);
  eq(rows.reduce((s, r) => s + r.id, 0), (N_BIG * (N_BIG + 1)) / 2, `${how}: sum of ids`);
  if (rows.length) {
    eq(rows[0], { id: 1, v: 'row-00001' }, `${how}: first row`);
    eq(rows[rows.length - 1], { id: N_BIG, v: `row-${N_BIG}` }, `${how}: last row`);
  }
}

async function checkBig(p) {
  const t = p.table('big');
  await drop(p, 'big');
  await withConn(() => p.proxy(), async (c) => {
    await c.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`);
    const insert = `INSERT INTO ${t} (id, v) VALUES ${new Array(1000).fill('(?, ?)').join(', ')}`;
    for (let start = 1; start <= N_BIG; start += 1000) {
      const params = [];
      for (let i = start; i < start + 1000; i++) params.push(i, `row-${String(i).padStart(5, '0')}`);
      const [res] = await p.run(c, insert, params);
      eq(res.affectedRows, 1000, `multi-row INSERT of ids ${start}..${start + 999} affectedRows`);
    }
    const select = `SELECT id, v FROM ${t} WHERE id > ? ORDER BY id`;
    const [rows] = await p.run(c, select, [0]);
    verifyBig(rows, `SELECT of 10,000 rows with ${p.method}()`);

    // streaming: the core connection's command as a Readable, rows handed over one at a time
    const streamed = [];
    for await (const row of c.connection[p.method](select, [0]).stream()) streamed.push(row);
    verifyBig(streamed, `SELECT of 10,000 rows with ${p.method}().stream()`);
    await selectOne(c, 'after the streamed 10,000-row result');
    const [dRows] = await withConn(() => p.direct(), (d) => p.run(d, select, [0]));
    rowsEq(streamed, dRows, '10,000 rows proxy (streamed) vs direct');
  });
}

// ------------------------------------------------------------------ 6. errors

async function error(run) {
  try {
    await run();
  } catch (e) {
    if (e.errno === undefined) throw e;
    return { errno: e.errno, sqlState: e.sqlState, code: e.code, message: e.sqlMessage };
  }
  throw new Abort('expected an error, but the statement succeeded');
}

async function checkErrors(p) {
  const t = p.table('err');
  await drop(p, 'err');
  const d = await p.direct();
  const c = await p.proxy();
  try {
    await d.query(`CREATE TABLE ${t} (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB`);
    await d.query(`INSERT INTO ${t} VALUES (1, 'one')`);
    const cases = [
      ['missing table', `SELECT * FROM ${p.table('no_such_table')} WHERE id = ?`, [1], 1146, '42S02', 'ER_NO_SUCH_TABLE'],
      ['duplicate key', `INSERT INTO ${t} VALUES (?, ?)`, [1, 'again'], 1062, '23000', 'ER_DUP_ENTRY'],
      ['syntax error', 'SELEC ? FROM dual', [1], 1064, '42000', 'ER_PARSE_ERROR'],
    ];
    for (const [label, sql, params, errno, state, code] of cases) {
      const got = await error(() => p.run(c, sql, params));
      const want = await error(() => p.run(d, sql, params));
      eq([got.errno, got.sqlState, got.code], [errno, state, code], `${label}: (errno, SQLSTATE, code)`);
      eq(got, want, `${label}: (errno, SQLSTATE, code, message) proxy vs direct`);
      await selectOne(c, `on the same connection after the ${label} error`);
    }

    // an error inside a transaction does not end it
    await c.beginTransaction();
    await p.run(c, `INSERT INTO ${t} VALUES (?, ?)`, [10, 'in tx']);
    eq((await error(() => p.run(c, `INSERT INTO ${t} VALUES (?, ?)`, [1, 'dup']))).errno, 1062,
      'duplicate key inside a transaction: errno');
    eq(await scalar(p, c, 'SELECT @@in_transaction AS t'), 1, 'SELECT @@in_transaction after the error');
    eq(await scalar(p, c, `SELECT v FROM ${t} WHERE id = ?`, [10]), 'in tx',
      "the transaction's earlier insert is still there after the error");
    eq(await scalar(p, d, `SELECT COUNT(*) AS n FROM ${t} WHERE id = ?`, [10]), 0,
      "the transaction's insert is not visible directly before the commit");
    await c.commit();
    eq((await d.query(`SELECT id, v FROM ${t} ORDER BY id`))[0], [{ id: 1, v: 'one' }, { id: 10, v: 'in tx' }],
      'table after the commit (direct)');
  } finally {
    await Promise.all([c.end(), d.end()]);
  }
}

// ------------------------------------------------------------------ main

const STEPS = [
  ['types', checkTypes],
  ['params', checkParams],
  ['tx', checkTransactions],
  ['ps-reuse', checkPsReuse],
  ['big', checkBig],
  ['errors', checkErrors],
];

async function main() {
  console.log(`mysql2 ${require('mysql2/package.json').version}, node ${process.version}`);
  for (const p of [new Pass('query', 'query'), new Pass('exec', 'execute')]) {
    for (const [step, fn] of STEPS) {
      where = `[${p.name} ${step}] `;
      const p0 = passed;
      const f0 = failed;
      try {
        await fn(p);
      } catch (e) {
        if (e instanceof Abort) fail(e.message);
        else fail(`unexpected ${e.stack || e}`);
      }
      console.log(`${failed === f0 ? 'ok  ' : 'FAIL'} ${p.name} ${step}: ${passed - p0 + failed - f0} checks, ${failed - f0} failed`);
    }
    where = '';
    try {
      await drop(p, 'types', 'tx', 'ps', 'big', 'err');
    } catch (e) {
      console.log(`note: cleanup of ${p.name} failed: ${e.message}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
