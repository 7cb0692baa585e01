#!/usr/bin/env bash
# Register a stack defined in stacks/<name>.yaml and make it active:
#   bash stacks/register.sh local
#   SRPO_S3_BUCKET=my-bucket SRPO_S3_ENDPOINT=http://127.0.0.1:5055 bash stacks/register.sh local-s3
# Placeholders ${NAME} / ${NAME:-default} in the file are filled from the environment first
# (a set variable wins, even when empty; a ${NAME} without a default must be set). Secrets (S3 keys, registry credentials) are never
# stored here: create them first with `zenml secret create ...` as the stack's file says.
# A stack file's "# flavor: <type> <module.Class>" lines name custom flavors (flavors/), registered first.
# The work is stacks/register.py: ZenML's own CLI commands, run in one Python process ($PYTHON, default
# python3: the environment ZenML is installed in). Exit codes: 2 missing file or variable, 3 already
# registered, 4 a flavor failed, 1 another ZenML error.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "${PYTHON:-python3}" "$here/register.py" "$@"
