#!/usr/bin/env bash
# Print the path of a working Python 3.13 interpreter (LocalStack 2026.3 needs it): pyenv's
# versions/3.13*, else python3.13 on PATH (a pyenv shim without that version is skipped).
# Fails saying so when there is none.
set -euo pipefail
candidates=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3)
if command -v python3.13 >/dev/null 2>&1; then candidates+=("$(command -v python3.13)"); fi
for candidate in "${candidates[@]}"; do
  if [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done
echo "python313.sh: no working Python 3.13 (pyenv versions/3.13* or python3.13 on PATH); LocalStack needs it" >&2
exit 1
