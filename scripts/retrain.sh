#!/usr/bin/env bash
# Retrain one spec: submit (a no-op when nothing changed), wait (a timeout is resumed by the next
# run), evaluate against the base and production models, and promote on a passing gate.
# Writes a Markdown summary to $GITHUB_STEP_SUMMARY and the records to $RETRAIN_OUT.
#
#   scripts/retrain.sh SPEC [--sandbox]
set -uo pipefail

spec="$1"
shift
extra=("$@")
out="${RETRAIN_OUT:-retrain-out}"
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
wait_timeout="${RETRAIN_WAIT_TIMEOUT:-5h}"
mkdir -p "$out"

field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

vertex-tuner submit "$spec" --no-wait --json "${extra[@]}" >"$out/submit.json"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "### ❌ \`$spec\`: submit failed (exit $rc)" >>"$summary"
  exit "$rc"
fi
job=$(field "$out/submit.json" job_name)
name=$(field "$out/submit.json" spec_name)
plan=$(field "$out/submit.json" plan)
echo "### \`$name\` ($spec)" >>"$summary"
echo "- plan: **$plan**, job \`$job\`" >>"$summary"

vertex-tuner wait "$job" --timeout "$wait_timeout" --json "${extra[@]}" >"$out/record.json"
rc=$?
if [ "$rc" -eq 4 ]; then
  echo "- ⏳ still running after $wait_timeout; the next run attaches to it and carries on" >>"$summary"
  exit 0
fi
if [ "$rc" -ne 0 ]; then
  echo "- ❌ the job did not succeed (exit $rc); see the run record artifact" >>"$summary"
  exit "$rc"
fi

vertex-tuner evaluate "$spec" --report "$out/report" --json "${extra[@]}" >"$out/evaluation.json"
rc=$?
if [ -f "$out/report/report.md" ]; then
  cat "$out/report/report.md" >>"$summary"
fi
if [ "$rc" -eq 5 ]; then
  echo "- ❌ the evaluation gate failed: \`$name@production\` was not moved" >>"$summary"
  exit 5
fi
if [ "$rc" -ne 0 ]; then
  echo "- ❌ evaluation failed (exit $rc)" >>"$summary"
  exit "$rc"
fi

vertex-tuner promote "$name" --alias production --if-gate --json "${extra[@]}" >"$out/promote.json"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "- ❌ promotion failed (exit $rc)" >>"$summary"
  exit "$rc"
fi
echo "- ✅ promoted \`$name@production\` to run \`$(field "$out/promote.json" run_id)\`" >>"$summary"
