#!/bin/sh
# managed by salt (rolestack salt role): check a candidate gdnsd file before it replaces the live one.
#
#   rolestack-gdnsd-check [-c CONFDIR] RELPATH CANDIDATE
#
# RELPATH is the file's path under CONFDIR (default /etc/gdnsd): `config` or `zones/<zone>`; CANDIDATE holds
# the new contents (salt's file.managed check_cmd appends it). The live CONFDIR is copied to a scratch
# directory, CANDIDATE put in place of RELPATH and `gdnsd -c SCRATCH checkconf` run there: the live files
# and the running daemon are not touched. Exit status 0: gdnsd accepts the result.
set -eu
confdir=/etc/gdnsd
if [ "${1:-}" = "-c" ]; then
    confdir=$2
    shift 2
fi
if [ $# -ne 2 ]; then
    echo "usage: rolestack-gdnsd-check [-c CONFDIR] RELPATH CANDIDATE" >&2
    exit 2
fi
relpath=$1
candidate=$2
scratch=$(mktemp -d "${TMPDIR:-/tmp}/rolestack-gdnsd-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
if [ -d "$confdir" ]; then
    cp -R "$confdir/." "$scratch/"
fi
mkdir -p "$scratch/zones" "$(dirname "$scratch/$relpath")"
cp "$candidate" "$scratch/$relpath"
if ! output=$(gdnsd -c "$scratch" checkconf 2>&1); then
    echo "rolestack-gdnsd-check: gdnsd checkconf refused the new $confdir/$relpath; the live file is unchanged:"
    echo "$output"
    exit 1
fi
