#!/usr/bin/env bash
# tests/drivers/install.sh — install what the real-driver scenarios in tests/drivers/ need, on a
# Debian machine where the user is root or has sudo. Idempotent: each piece is installed only if
# it is missing, `apt-get update` runs at most once and only when something comes from apt.
#
#   OpenJDK (default-jdk-headless)       if `java` is missing   -> Scenario.java
#   MariaDB Connector/J (libmariadb-java) if its jar is missing  -> Scenario.java
#   mysql-connector-python (PyPI)         if it does not import  -> connector_python.py
#   PyMySQL (PyPI)                        if it does not import  -> ../python/pymysql_scenario.py
#   sysbench (Debian)                     if it is missing       -> tests/tests/drivers.rs
#   node + npm (Debian)                   if `node` is missing   -> node/scenario.js
#   mysql2 (npm ci in tests/drivers/node) if node_modules lacks the locked version
#
# Usage: tests/drivers/install.sh   (prints one line per thing installed, nothing otherwise)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONNECTOR_J=/usr/share/java/mariadb-java-client.jar

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# quiet: runs a command with its output in $LOG, shown only if the command fails
quiet() { "$@" >"$LOG" 2>&1 || { local rc=$?; cat "$LOG" >&2; echo "drivers: failed: $*" >&2; return "$rc"; }; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    APT_UPDATED=1
  fi
  quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if ! command -v java >/dev/null; then
  apt_install default-jdk-headless
  echo "drivers: installed OpenJDK ($(java -version 2>&1 | head -n1))"
fi

if [ ! -f "$CONNECTOR_J" ]; then
  apt_install libmariadb-java
  [ -f "$CONNECTOR_J" ] || { echo "drivers: libmariadb-java installed but $CONNECTOR_J is missing" >&2; exit 1; }
  echo "drivers: installed MariaDB Connector/J (libmariadb-java $(dpkg-query -W -f='${Version}' libmariadb-java), $CONNECTOR_J)"
fi

if ! command -v python3 >/dev/null; then
  apt_install python3 python3-pip
  echo "drivers: installed $(python3 --version)"
fi
# Debian's system python is "externally managed" (PEP 668); fall back accordingly.
pip_install() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
    echo "drivers: installed pip ($(python3 -m pip --version | cut -d' ' -f1-2))"
  fi
  python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
    || quiet python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}
# The versions the scenarios were written against (docs/compatibility.md).
if [ "$(python3 -c 'import mysql.connector; print(mysql.connector.__version__)' 2>/dev/null)" != 26.10.0 ]; then
  pip_install mysql-connector-python==26.10.0
  echo "drivers: installed mysql-connector-python $(python3 -c 'import mysql.connector; print(mysql.connector.__version__)')"
fi
# PyMySQL: the pinned version, or — on a package index that does not carry it (mirrors differ)
# — the newest 1.1 or later it has; the scenario uses only the DB-API both share, and the
# driver report names the version that ran.
if [ "$(python3 -c 'import pymysql; print(pymysql.__version__)' 2>/dev/null)" != 2.2.8 ]; then
  if ! pip_install pymysql==2.2.8 2>/dev/null; then
    echo "drivers: PyMySQL 2.2.8 is not on this package index; installing the newest >= 1.1 it has"
    pip_install 'pymysql>=1.1'
  fi
  echo "drivers: installed PyMySQL $(python3 -c 'import pymysql; print(pymysql.__version__)')"
fi

if ! command -v sysbench >/dev/null; then
  apt_install sysbench
  echo "drivers: installed $(sysbench --version)"
fi

if ! command -v node >/dev/null; then
  apt_install nodejs npm
  echo "drivers: installed node $(node --version) and npm $(npm --version)"
fi

# npm ci only when node_modules does not already hold the version package-lock.json pins.
want="$(node -e 'console.log(require(process.argv[1]).packages["node_modules/mysql2"].version)' "$HERE/node/package-lock.json")"
have="$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' "$HERE/node/node_modules/mysql2/package.json")"
if [ "$want" != "$have" ]; then
  (cd "$HERE/node" && quiet npm ci --no-audit --no-fund)
  echo "drivers: installed mysql2 $want (npm ci in tests/drivers/node)"
fi
