#!/usr/bin/env bash
# ./tiangong test [--fast] [extra dotnet test args]: the whole suite (slow end-to-end tests included unless --fast).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
filter=()
if [[ "${1:-}" == "--fast" ]]; then shift; filter=(--filter "Category!=Slow"); fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
dotnet test "$ROOT/tests/TianGong.Tests/TianGong.Tests.csproj" -c Release -nologo "${filter[@]}" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One plain closing line that any CI reads: "N passed, N failed, N skipped".
summary=$(grep -E '(Passed|Failed)!? +- +Failed: +[0-9]+, +Passed: +[0-9]+' "$log" | tail -n 1)
if [[ -n "$summary" ]]; then
  failed=$(sed -E 's/.*Failed: +([0-9]+).*/\1/' <<<"$summary")
  passed=$(sed -E 's/.*Passed: +([0-9]+).*/\1/' <<<"$summary")
  skipped=$(sed -E 's/.*Skipped: +([0-9]+).*/\1/' <<<"$summary")
  echo "$passed passed, $failed failed, $skipped skipped"
fi
exit "$rc"
