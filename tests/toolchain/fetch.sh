#!/usr/bin/env bash
# Fetch the toolchain's Debian packages and GNU hello's source, pinned by SHA-256.
#
#   tests/toolchain/fetch.sh [CACHE]        (default: target/toolchain)
#
# Leaves exactly the pinned packages in CACHE/debs (debs.txt: name, version, file, SHA-256) and
# the pinned source files in CACHE/src (srcs.txt: source package, version, file, SHA-256). Files
# already there are checked, anything missing is fetched with `apt-get download` /
# `apt-get source --download-only` from Debian bookworm (apt.sh: an apt of our own, the host's
# sources untouched). A file whose SHA-256 differs from its pin is deleted and the script fails
# naming it: nothing unpinned is ever left where the derivations take their inputs from.
# TOOLCHAIN_DEBS / TOOLCHAIN_SRCS name other pin files (the tests use this to check the refusal).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-$HERE/../../target/toolchain}
DEBS_PINS=${TOOLCHAIN_DEBS:-$HERE/debs.txt}
SRCS_PINS=${TOOLCHAIN_SRCS:-$HERE/srcs.txt}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
exec 9>"$CACHE/lock"
flock 9
. "$HERE/apt.sh"

# pins FILE -> "name version file sha256" lines, comments dropped.
pins() { grep -v '^[[:space:]]*\(#\|$\)' "$1"; }

# check DIR PINFILE: delete files in DIR that no pin names; list the pins whose file is missing
# or wrong (a wrong file is deleted).
missing() {
    local dir=$1 pinfile=$2 name version file sum
    mkdir -p "$dir"
    for f in "$dir"/*; do
        [ -e "$f" ] || continue
        pins "$pinfile" | awk '{print $3}' | grep -qxF "$(basename "$f")" || rm -f "$f"
    done
    while read -r name version file sum; do
        if [ -f "$dir/$file" ] && [ "$(sha256 "$dir/$file")" = "$sum" ]; then continue; fi
        rm -f "$dir/$file"
        echo "$name $version $file $sum"
    done < <(pins "$pinfile")
}

# take DIR TMP "name version file sum"...: move each fetched file from TMP into DIR if its
# SHA-256 is the pinned one; refuse (and delete) otherwise.
take() {
    local dir=$1 tmp=$2 bad=0 name version file sum got
    shift 2
    for line in "$@"; do
        read -r name version file sum <<<"$line"
        if [ ! -f "$tmp/$file" ]; then
            echo "fetch.sh: $name $version: apt fetched no $file" >&2; bad=1; continue
        fi
        got=$(sha256 "$tmp/$file")
        if [ "$got" != "$sum" ]; then
            echo "fetch.sh: REFUSED $file: SHA-256 $got, pinned $sum" >&2
            rm -f "$tmp/$file"; bad=1; continue
        fi
        mv "$tmp/$file" "$dir/$file"
    done
    return $bad
}

mapfile -t need_debs < <(missing "$CACHE/debs" "$DEBS_PINS")
mapfile -t need_srcs < <(missing "$CACHE/src" "$SRCS_PINS")
status=0
if [ ${#need_debs[@]} -gt 0 ] || [ ${#need_srcs[@]} -gt 0 ]; then
    apt_setup
    tmp=$(mktemp -d "$CACHE/fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if [ ${#need_debs[@]} -gt 0 ]; then
        (cd "$tmp" && apt-get "${APT_OPTS[@]}" -qq download \
            $(printf '%s\n' "${need_debs[@]}" | awk '{print $1 "=" $2}')) >&2 || status=1
        take "$CACHE/debs" "$tmp" "${need_debs[@]}" || status=1
    fi
    for line in "${need_srcs[@]}"; do
        read -r name version file sum <<<"$line"
        (cd "$tmp" && apt-get "${APT_OPTS[@]}" -qq source --download-only "$name=$version") >&2 || status=1
        take "$CACHE/src" "$tmp" "$line" || status=1
    done
fi
if [ $status -ne 0 ]; then
    echo "fetch.sh: failed; if Debian moved a pinned version on, run tests/toolchain/pin.sh" >&2
    exit 1
fi
echo "$CACHE"
