#!/usr/bin/env bash
# check-glibc.sh LIB MAX: fails if LIB references a GLIBC_x.y symbol
# version above MAX (objdump -T), so it loads with any glibc >= MAX.
set -euo pipefail
lib=$1 max=$2
highest=$(objdump -T "$lib" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
[ -n "$highest" ] || { echo "check-glibc: no GLIBC symbol versions in $lib" >&2; exit 1; }
if [ "$(printf '%s\n%s\n' "$highest" "$max" | sort -V | tail -1)" != "$max" ]; then
  echo "check-glibc: $lib needs GLIBC_$highest > GLIBC_$max:" >&2
  objdump -T "$lib" | grep -E "GLIBC_$highest( |\$)" >&2 || true
  exit 1
fi
echo "check-glibc: $lib needs at most GLIBC_$highest (limit GLIBC_$max)"
