#!/usr/bin/env bash
# Retrain one spec, the way the retrain workflow does it in Google Cloud and in the sandbox:
#
#   submit --no-wait   the fingerprint makes an unchanged spec a no-op (reuse, or attach to the
#                      job already running)
#   wait               exit 4 (still running at RETRAIN_WAIT_TIMEOUT) is no failure: the job
#                      keeps running in Vertex and the next run attaches to it
#   (unchanged)        NAME@production already serves this run: nothing to evaluate or promote
#   evaluate --report  exit 5 when the spec's gate fails; production stays where it was
#   promote --if-gate  NAME@production -> this run
#
# Usage: scripts/retrain.sh SPEC [FLAG...]
#   FLAGs (e.g. --sandbox, --registry gs://…) are given to every vertex-tuner command.
#
# Writes a Markdown section to $GITHUB_STEP_SUMMARY; outcome, message, run_id and spec_name to
# $GITHUB_OUTPUT; the JSON documents, the evaluation report, the logs and the final run record
# (record.json) to $RETRAIN_OUT/<spec file name without .yaml>/.
# Environment: RETRAIN_OUT (default retrain-out), RETRAIN_WAIT_TIMEOUT (default 5h),
# RETRAIN_RETRY_FAILED=true to submit again when the last job for this data and spec failed.
# Exit status: 0 when promoted, unchanged or still running; else the failing command's status.
set -uo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: scripts/retrain.sh SPEC [FLAG...]" >&2
  exit 2
fi
spec=$1
shift
flags=("$@")
stem=$(basename "$spec")
stem=${stem%.*}
out="${RETRAIN_OUT:-retrain-out}/$stem"
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
outputs="${GITHUB_OUTPUT:-/dev/null}"
wait_timeout="${RETRAIN_WAIT_TIMEOUT:-5h}"
name=""
run_id=""
mkdir -p "$out"

# vt JSON LOG ARG...: vertex-tuner ARG... FLAG...; the JSON on stdout goes to JSON, stderr to
# the job's log and to LOG (so a failure's own words can go on the summary).
vt() {
  local into=$1 log=$2 rc
  shift 2
  {
    vertex-tuner "$@" ${flags[@]+"${flags[@]}"} 2>&1 >"$into" | tee -i "$log" >&2
    rc=${PIPESTATUS[0]}
  }
  return "$rc"
}

# field FILE KEY.KEY…: one value from a JSON document, empty when it is missing.
field() {
  python3 - "$1" "$2" <<'PY'
import json
import sys

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        value = json.load(f)
except (OSError, ValueError):
    value = None
for key in sys.argv[2].split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value)
PY
}

say() { printf '%s\n' "$@" >>"$summary"; }

meaning() {
  case $1 in
    1) echo "invalid spec or data, or the job failed, was cancelled or expired" ;;
    2) echo "usage error" ;;
    3) echo "the estimate is over budget.max_cost_usd; nothing was uploaded" ;;
    5) echo "the evaluation gate failed" ;;
    130) echo "interrupted; a job already created keeps running and the next run attaches to it" ;;
    *) echo "unexpected failure" ;;
  esac
}

# finish STATUS OUTCOME MESSAGE: the last line of the section, the step's outputs, the record.
finish() {
  local status=$1 outcome=$2 message=$3
  say "" "$message" ""
  {
    echo "outcome=$outcome"
    echo "message=${message//$'\n'/ }"
    echo "run_id=$run_id"
    echo "spec_name=$name"
  } >>"$outputs"
  if [ -n "$run_id" ]; then
    vt "$out/record.json" "$out/show.log" show "$run_id" --json || true
  fi
  exit "$status"
}

# fail STATUS OUTCOME WHAT LOG: finish with what failed, why (the command's error and hint).
fail() {
  local status=$1 outcome=$2 what=$3 log=$4 why
  why=$(sed -n '/^error:/,$p' "$log" | head -n 8)
  if [ -n "$why" ]; then
    say "" '```text' "$why" '```'
    echo "::error title=retrain ${spec}::${what}: $(head -n 1 <<<"$why")"
  fi
  finish "$status" "$outcome" "❌ **${what}** (exit $status: $(meaning "$status"))"
}

submit_flags=(--no-wait --json)
if [ "${RETRAIN_RETRY_FAILED:-}" = "true" ]; then
  submit_flags+=(--retry-failed)
fi
vt "$out/submit.json" "$out/submit.log" submit "$spec" "${submit_flags[@]}"
rc=$?
if [ "$rc" -ne 0 ]; then
  say "## \`$spec\`"
  case $rc in
    3) fail "$rc" over-budget "submit refused: over budget" "$out/submit.log" ;;
    *) fail "$rc" failed "submit failed" "$out/submit.log" ;;
  esac
fi
name=$(field "$out/submit.json" spec_name)
run_id=$(field "$out/submit.json" run_id)
say "## \`$name\` ($spec)" ""
python3 - "$out/submit.json" >>"$summary" <<'PY'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    record = json.load(f)
estimate = record.get("estimate") or {}
cost = estimate.get("cost_usd")
print(
    f"- plan: **{record['plan']}**, job `{record['job_name']}`, run `{record['run_id']}`\n"
    f"- estimate: ~{estimate.get('billable_tokens', 0):,} billable tokens"
    + (f" ≈ ${cost:,.2f}" if cost is not None else "")
    + f"; uploaded {record.get('bytes_uploaded', 0):,} bytes"
)
PY

vt "$out/wait.json" "$out/wait.log" wait "$spec" --timeout "$wait_timeout" --json
rc=$?
case $rc in
  0) ;;
  4)
    finish 0 running "⏳ **still running** after $wait_timeout: the job keeps running in Vertex, \
and the next run of this workflow attaches to it (the run store carries the state)."
    ;;
  130) fail "$rc" interrupted "detached while waiting" "$out/wait.log" ;;
  *) fail "$rc" failed "the tuning job did not succeed" "$out/wait.log" ;;
esac

vt "$out/aliases.json" "$out/aliases.log" aliases "$name" --json
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "$rc" failed "could not read the aliases of $name" "$out/aliases.log"
fi
current=$(field "$out/aliases.json" aliases.production.run_id)
if [ -n "$current" ]; then was="run \`$current\`"; else was="nothing"; fi
if [ "$current" = "$run_id" ]; then
  finish 0 unchanged "✅ **unchanged**: \`$name@production\` already serves run \`$run_id\`; \
nothing to evaluate or promote."
fi

vt "$out/evaluation.json" "$out/evaluate.log" evaluate "$spec" --report "$out/report" --json
rc=$?
if [ -f "$out/report/report.md" ]; then
  say ""
  cat "$out/report/report.md" >>"$summary"
fi
case $rc in
  0) ;;
  5)
    fail "$rc" gate-failed "the evaluation gate failed; \`$name@production\` stays at $was" \
      "$out/evaluate.log"
    ;;
  *) fail "$rc" failed "evaluation failed" "$out/evaluate.log" ;;
esac

vt "$out/promote.json" "$out/promote.log" promote "$name" "$run_id" --alias production --if-gate \
  --json
rc=$?
if [ "$rc" -ne 0 ]; then
  fail "$rc" failed "promotion failed" "$out/promote.log"
fi
finish 0 promoted "✅ **promoted**: \`$name@production\` → run \`$run_id\` (it was at $was)."
