#!/usr/bin/env bash
# Lints infra/template.yaml with cfn-lint and checkov (both from PyPI), installed into their own
# virtualenv (checkov pins versions that would clash with the test tools). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${PINPIPE_TOOLS:-/var/tmp/pinpipe-tools}"
VENV="$TOOLS/infra-venv"
if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV" 2>/dev/null || { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
  "$VENV/bin/pip" install --disable-pip-version-check -q 'cfn-lint==1.*' 'checkov==3.*'
fi
# pinpipe's own deploy rules (infra/rules) run with cfn-lint's; tests/test_infra.py shows each
# one failing on the template as it was before them.
echo "cfn-lint --append-rules infra/rules infra/template.yaml"
"$VENV/bin/cfn-lint" --append-rules infra/rules -- infra/template.yaml
echo "checkov -f infra/template.yaml"
"$VENV/bin/checkov" --quiet --compact --skip-download -f infra/template.yaml --framework cloudformation
