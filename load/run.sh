#!/usr/bin/env bash
# Load test: gunicorn over a fresh PostgreSQL database (the demo plus a few thousand members),
# evaluations running back to back the whole time, and locust's virtual members and staff
# (load/locustfile.py) for a bounded time. Fails unless locust saw zero failures, no
# evaluation failed, and neither gunicorn's nor the evaluations' output shows an error.
#
#   bash load/run.sh                      # defaults below; override any by environment
#   USERS=50 DURATION=120s bash load/run.sh
#
# Needs: PostgreSQL reachable as PG (superuser: it drops and creates LOAD_DB), and the
# project installed with the bench extra (pip install -e '.[bench]': locust).
# Results: $OUT/locust_stats.csv (per page: requests, failures, percentiles),
# locust_failures.csv, locust_exceptions.csv, gunicorn.log, evaluations.log, summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PG="${PG:-postgresql://postgres@127.0.0.1:5432}"
LOAD_DB="${LOAD_DB:-portal_load}"
EXTRA="${EXTRA:-3000}"          # extra members besides the demo's
LOGINS="${LOGINS:-300}"         # of which can log in (password load1234)
USERS="${USERS:-30}"            # locust virtual users
SPAWN="${SPAWN:-5}"             # users started per second
DURATION="${DURATION:-60s}"
WORKERS="${WORKERS:-4}"
PORT="${PORT:-8765}"
OUT="${OUT:-load/results}"
if [ -z "${BIN:-}" ]; then
  command -v portal >/dev/null || { echo "portal is not on PATH: activate the venv (pip install -e '.[bench]')" >&2; exit 1; }
  BIN="$(dirname "$(command -v portal)")"  # where portal, gunicorn, locust and their python live
fi
PY="$BIN/python"
for tool in portal gunicorn locust python; do
  [ -x "$BIN/$tool" ] || { echo "$BIN/$tool is missing (pip install -e '.[bench]')" >&2; exit 1; }
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
rm -f "$OUT"/locust_*.csv "$OUT"/gunicorn.log "$OUT"/evaluations.log "$OUT"/summary.txt

export PORTAL_DATABASE_URL="${PG%/}/${LOAD_DB}"
export PORTAL_SECRET_KEY="${PORTAL_SECRET_KEY:-$("$PY" -c 'import secrets; print(secrets.token_hex(32))')}"
export PORTAL_RATELIMIT_ENABLED=false   # every virtual user comes from 127.0.0.1
export PORTAL_SCHEDULER=off
export LOAD_USERS="$WORK/users.csv"

GUNICORN_PID=""
EVAL_PID=""
cleanup() {
  [ -n "$EVAL_PID" ] && kill -- -"$EVAL_PID" 2>/dev/null || true
  [ -n "$GUNICORN_PID" ] && kill "$GUNICORN_PID" 2>/dev/null || true
  [ -n "$GUNICORN_PID" ] && wait "$GUNICORN_PID" 2>/dev/null || true
  rm -rf "$WORK"
  if [ -z "${KEEP_DB:-}" ]; then
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$LOAD_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "== fresh database $LOAD_DB"
psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS \"$LOAD_DB\" WITH (FORCE)"
psql "$PG/postgres" -qc "CREATE DATABASE \"$LOAD_DB\""
"$BIN/portal" init
"$BIN/portal" demo --no-serve >/dev/null

echo "== $EXTRA extra members ($LOGINS with a login)"
"$PY" load/make_population.py "$WORK" --members "$EXTRA" --logins "$LOGINS"
"$BIN/portal" import members "$WORK/members.csv"
"$BIN/portal" import metrics "$WORK/metrics.csv"
YESTERDAY="$("$PY" -c 'import datetime as d; print(d.date.today() - d.timedelta(days=1))')"
"$BIN/portal" evaluate --as-of "$YESTERDAY" | tail -1   # every member has standings before the test

echo "== gunicorn -w $WORKERS on 127.0.0.1:$PORT"
"$BIN/gunicorn" -w "$WORKERS" -b "127.0.0.1:$PORT" --access-logfile - --error-logfile - \
  'portal:create_app()' >"$OUT/gunicorn.log" 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null

echo "== evaluations back to back (one day after another, from today)"
# Its own process group, so the loop and the evaluation it runs stop together.
setsid bash -c '
  day="$("$0/python" -c "import datetime as d; print(d.date.today())")"
  while true; do
    start=$(date +%s.%N)
    if "$0/portal" evaluate --as-of "$day" >"$1.run" 2>&1; then
      echo "$(date -u +%T) as of $day: $(tail -1 "$1.run") ($("$0/python" -c "print(round($(date +%s.%N) - $start, 1))")s)" >>"$1"
    else
      echo "$(date -u +%T) as of $day: FAILED" >>"$1"; cat "$1.run" >>"$1"
    fi
    day="$("$0/python" -c "import datetime as d; print(d.date.fromisoformat(\"$day\") + d.timedelta(days=1))")"
  done' "$BIN" "$OUT/evaluations.log" &
EVAL_PID=$!

echo "== locust: $USERS users, $DURATION"
set +e
"$BIN/locust" -f load/locustfile.py --headless -u "$USERS" -r "$SPAWN" -t "$DURATION" \
  --host "http://127.0.0.1:$PORT" --csv "$OUT/locust" --only-summary 2>&1 | tail -40
LOCUST_STATUS=${PIPESTATUS[0]}
set -e

kill -- -"$EVAL_PID" 2>/dev/null || true
wait "$EVAL_PID" 2>/dev/null || true
EVAL_PID=""
rm -f "$OUT/evaluations.log.run"

echo "== checks"
"$PY" - "$OUT" "$LOCUST_STATUS" <<'PY'
import csv, re, sys
from pathlib import Path

out, status = Path(sys.argv[1]), int(sys.argv[2])
rows = list(csv.DictReader(open(out / "locust_stats.csv", encoding="utf-8")))
total = next(r for r in rows if r["Name"] == "Aggregated")
evaluations = (out / "evaluations.log").read_text().splitlines() if (out / "evaluations.log").exists() else []
log = (out / "gunicorn.log").read_text(errors="replace")
problems = []
if status != 0:
    problems.append(f"locust exited {status}")
if int(total["Failure Count"]) != 0:
    problems.append(f"{total['Failure Count']} failed requests (see locust_failures.csv)")
if int(total["Request Count"]) == 0:
    problems.append("no requests")
if any("FAILED" in line for line in evaluations):
    problems.append("an evaluation failed (see evaluations.log)")
if not [line for line in evaluations if "evaluated" in line]:
    problems.append("no evaluation completed during the test")
for needle in ("Traceback", "database is locked", "[ERROR]", "[CRITICAL]"):
    if needle in log:
        problems.append(f"gunicorn.log contains {needle!r}")
if re.search(r'" 5\d\d ', log):
    problems.append("gunicorn answered 5xx")
lines = [f"{'page':<36} {'requests':>8} {'fail':>5} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>7}  (ms)"]
for r in rows:
    lines.append(f"{(r['Type'] + ' ' + r['Name']).strip():<36} {r['Request Count']:>8} {r['Failure Count']:>5} "
                 f"{r['50%']:>6} {r['95%']:>6} {r['99%']:>6} {float(r['Max Response Time']):>7.0f}")
lines.append(f"evaluations completed during the test: {sum('evaluated' in line for line in evaluations)}")
lines += ["  " + line for line in evaluations]
text = "\n".join(lines)
(out / "summary.txt").write_text(text + "\n")
print(text)
if problems:
    print("LOAD TEST FAILED: " + "; ".join(problems))
    sys.exit(1)
print("load test passed: zero failures")
PY
