#!/usr/bin/env bash
# Print the path of a Python 3.13 interpreter (LocalStack 2026.3 needs it): python3.13 on PATH,
# else pyenv's. Fails saying so when there is none.
set -euo pipefail
if command -v python3.13 >/dev/null 2>&1; then command -v python3.13; exit 0; fi
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3; do
  if [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
echo "python313.sh: no Python 3.13 found (python3.13 on PATH or pyenv versions/3.13*); LocalStack needs it" >&2
exit 1
