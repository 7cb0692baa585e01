#!/usr/bin/env bash
# Register a stack defined in stacks/<name>.yaml and make it active:
#   bash stacks/register.sh local
#   SRPO_S3_BUCKET=my-bucket SRPO_S3_ENDPOINT=http://127.0.0.1:5055 bash stacks/register.sh local-s3
# Placeholders ${NAME} / ${NAME:-default} in the file are filled from the environment first
# (a set variable wins, even when empty; a ${NAME} without a default must be set). Secrets (S3 keys, registry credentials) are never
# stored here: create them first with `zenml secret create ...` as the stack's file says.
# A stack file's "# flavor: <type> <module.Class>" lines name custom flavors (flavors/), registered first.
set -euo pipefail
name="${1:?usage: stacks/register.sh <stack file name without .yaml>}"
here="$(cd "$(dirname "$0")" && pwd)"
file="$here/$name.yaml"
[ -f "$file" ] || { echo "no stack file $file (have: $(ls "$here"/*.yaml | xargs -n1 basename | tr '\n' ' '))" >&2; exit 2; }
stack="$(sed -n 's/^stack_name: *//p' "$file")"
zenml="${ZENML:-zenml}"
filled="$(mktemp --suffix=.yaml)"
trap 'rm -f "$filled"' EXIT
# ${NAME:-default}: the variable when it is set (even to ""), else the default; ${NAME}: must be set.
perl -pe 's/\$\{(\w+)(?::-([^}]*))?\}/exists $ENV{$1} ? $ENV{$1} : defined $2 ? $2 : die "stacks\/'"$name"'.yaml needs \$$1: set it in the environment (see the comments at the top of the file)\n"/ge' \
  "$file" > "$filled" || exit 2
if "$zenml" stack describe "$stack" >/dev/null 2>&1; then
  echo "stack $stack is already registered: 'zenml stack set $stack' to use it, or 'zenml stack delete $stack' and run this again" >&2
  exit 3
fi
# Custom flavors the stack uses, one "# flavor: <component type> <source>" line each, registered from
# the repository root (the source root); one already registered is kept.
sed -n 's/^# flavor: *//p' "$file" | while read -r type source; do
  flavor_name="$(cd "$here/.." && PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$zenml" "$type" flavor register "$source" </dev/null 2>&1)" \
    || { echo "registering the $type flavor $source failed:" >&2; echo "$flavor_name" >&2; exit 4; }
done
"$zenml" stack import "$stack" -f "$filled" </dev/null
"$zenml" stack set "$stack"
