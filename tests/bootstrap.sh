#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian 12 machine; fast (no network) when all is there.
#   tests/bootstrap.sh            Debian packages + .venv with the pinned requirements
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages used by the tests and the lab (real services, never mocks)
APT_PACKAGES=(
  git make dpkg-dev iproute2 procps psmisc
  mariadb-server mariadb-client mariadb-backup
  redis-server memcached nutcracker libmemcached-tools nftables gdnsd rsync xinetd
  systemd-container debootstrap
  nfs-ganesha nfs-ganesha-vfs libnfs-utils
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv, with pinned packages; rebuilt only when requirements.txt or setup.cfg change
stamp=.venv/.rolestack-requirements
want=$(cat requirements.txt setup.cfg | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "bootstrap: building .venv (salt builds from sdist: about a minute)"
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
