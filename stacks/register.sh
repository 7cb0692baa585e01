#!/usr/bin/env bash
# Register a stack defined in stacks/<name>.yaml and make it active:
#   bash stacks/register.sh local
# Secrets (S3 keys, registry credentials) are never stored here: create them first with
# `zenml secret create ...` as the stack's file says.
set -euo pipefail
name="${1:?usage: stacks/register.sh <stack file name without .yaml>}"
here="$(cd "$(dirname "$0")" && pwd)"
file="$here/$name.yaml"
[ -f "$file" ] || { echo "no stack file $file (have: $(ls "$here"/*.yaml | xargs -n1 basename | tr '\n' ' '))" >&2; exit 2; }
stack="$(sed -n 's/^stack_name: *//p' "$file")"
zenml="${ZENML:-zenml}"
"$zenml" stack import "$stack" -f "$file"
"$zenml" stack set "$stack"
