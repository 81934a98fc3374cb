#!/usr/bin/env bash
# The module dependency rules of ARCHITECTURE.md ("How to check them"), run as they are written
# there, so the document and the check cannot drift: every command must print nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t checks < <(grep -E "^grep -rnE '" ARCHITECTURE.md)
if [ "${#checks[@]}" -lt 5 ]; then
  echo "error: expected the dependency checks in ARCHITECTURE.md, found ${#checks[@]}" >&2
  exit 1
fi
failed=0
for check in "${checks[@]}"; do
  out=$(bash -c "$check" || true)
  if [ -n "$out" ]; then
    echo "dependency rule broken by:"; echo "$out"; echo "  (check: $check)"
    failed=1
  fi
done
[ "$failed" = 0 ] && echo "dependency rules: ${#checks[@]} checks, all clean"
exit "$failed"
