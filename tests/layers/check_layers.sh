#!/usr/bin/env bash
# The layers of proxy/, lowest first. A file may include its own folder and the folders below
# it, never one above: upstream/ is a plain HTTP client that knows nothing of flights, and ops/
# (config, metrics, logs) nothing of the session or the coalescing that report to it.
# Prints every include that points up; exit status 0 only if there is none.
set -euo pipefail
proxy=${1:-"$(dirname "$0")/../../proxy"}
layers=(net http ops upstream coalesce cluster server)

rank() {
    local i
    for i in "${!layers[@]}"; do
        if [ "${layers[$i]}" = "$1" ]; then
            echo "$i"
            return
        fi
    done
    echo -1
}

bad=0
checked=0
for layer in "${layers[@]}"; do
    own=$(rank "$layer")
    for file in "$proxy/$layer"/*.hpp "$proxy/$layer"/*.cpp; do
        [ -e "$file" ] || continue
        checked=$((checked + 1))
        while IFS=: read -r line target; do
            folder=${target%%/*}
            other=$(rank "$folder")
            if [ "$other" -lt 0 ]; then
                echo "$file:$line: includes \"$target\", outside the known layers (${layers[*]})"
                bad=1
            elif [ "$other" -gt "$own" ]; then
                echo "$file:$line: $layer/ includes \"$target\": $folder/ is above $layer/"
                bad=1
            fi
        done < <(grep -n -o '^#include "[^"]*/[^"]*"' "$file" | sed 's/#include "//; s/"$//')
    done
done
# A check that found no files checked nothing.
if [ "$checked" -lt 20 ]; then
    echo "only $checked files found under $proxy: wrong directory?"
    exit 1
fi
if [ "$bad" -ne 0 ]; then
    exit 1
fi
echo "$checked files, every include points down: ${layers[*]}"
