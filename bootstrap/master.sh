#!/bin/sh
# bootstrap/master.sh: make this Debian host the rolestack salt master, non-interactively; re-running it changes
# nothing. docs/roles/salt.md, "Bootstrap".
#
#   bootstrap/master.sh --pillar GIT_URL [--states GIT_URL] [--python PATH] [--no-start]
#
#   --pillar   the pillar repository (inventory.yaml on branch main) seeding /srv/git/pillar.git, once
#   --states   the states repository seeding /srv/git/states.git, once (default: this clone's HEAD)
#   --python   a python with salt 3008.3 and rolestack's requirements (default: /opt/rolestack/venv, created
#              with pip from this clone when missing)
#   --no-start write the configuration only: start no service and do not apply the salt role (image builds, tests)
#
# Steps: seed the bare repositories under /srv/git (refused if the inventory does not validate); then
# `salt-call --local state.apply bootstrap` (master configuration, its own minion, /srv in git: states/bootstrap/;
# salt-master and salt-minion started); then, through that master, `salt-call state.apply salt` (the salt role:
# DNS, CA, /srv). Existing repositories are never fetched again: after the bootstrap, operators push to them.
# ROLESTACK_BOOTSTRAP_OUT=--out=json gives salt-call's returns as JSON (the tests read them).
set -eu
clone=$(cd "$(dirname "$0")/.." && pwd)
pillar_src='' states_src=$clone python='' start=true
while [ $# -gt 0 ]; do
    case $1 in
    --pillar) pillar_src=$2; shift 2 ;;
    --states) states_src=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --no-start) start=false; shift ;;
    *) echo "master.sh: unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "master.sh: run it as root" >&2; exit 2; }
if [ -z "$python" ]; then
    python=/opt/rolestack/venv/bin/python
    if [ ! -x "$python" ]; then
        python3 -m venv /opt/rolestack/venv
        "$python" -m pip install -q "$clone"
    fi
fi
bin=$(dirname "$python")
validate() {  # stdin: an inventory; $1: its name in messages
    PYTHONPATH=$clone "$python" -m rolestack.cli validate --stdin-name "$1" - >/dev/null
}

# /srv/git/<name>.git from $2's branch (HEAD for the states), once: built aside, then renamed into place
seed() {
    name=$1 src=$2 ref=$3 git_dir=/srv/git/$1.git
    [ -e "$git_dir/HEAD" ] && return 0
    [ -n "$src" ] || { echo "master.sh: /srv/git/$name.git is missing: give --$name GIT_URL" >&2; exit 2; }
    mkdir -p /srv/git
    rm -rf "$git_dir.new"
    git init -q --bare --shared=0660 -b main "$git_dir.new"
    git --git-dir="$git_dir.new" fetch -q "$src" "+$ref:refs/heads/main"
    if [ "$name" = pillar ]; then
        git --git-dir="$git_dir.new" show main:inventory.yaml | validate "$src:inventory.yaml" || {
            rm -rf "$git_dir.new"
            echo "master.sh: the inventory of $src does not validate (above): nothing was bootstrapped" >&2
            exit 1
        }
    fi
    mv -T "$git_dir.new" "$git_dir"
}
seed pillar "$pillar_src" main
seed states "$states_src" HEAD

# the salt-call --local configuration of the bootstrap itself (written the same each run)
host=$(git --git-dir=/srv/git/pillar.git show main:inventory.yaml | PYTHONPATH=$clone "$python" -m rolestack.cli salt-host -)
conf=/etc/rolestack/bootstrap
mkdir -p "$conf"
cat > "$conf/minion.new" <<CONF
# written by $clone/bootstrap/master.sh: its salt-call --local configuration
id: $host
file_client: local
file_roots: {base: [$clone/states]}
ext_pillar:
  - rolestack: {git: {repo: /srv/git/pillar.git, ref: main, path: inventory.yaml}}
module_dirs: [$clone/_modules]
states_dirs: [$clone/_states]
pillar_dirs: [$clone/_pillar]
utils_dirs: [$clone/_utils]
cachedir: /var/cache/salt/rolestack-bootstrap
log_file: /var/log/salt/rolestack-bootstrap
rolestack_project: /srv/salt/current
CONF
mv "$conf/minion.new" "$conf/minion"

apply() {
    PATH=$bin:$PATH "$bin/salt-call" -c "$conf" --local --retcode-passthrough ${ROLESTACK_BOOTSTRAP_OUT:-} \
        state.apply "$1" pillar="{\"rolestack_bootstrap\": {\"bin\": \"$bin\", \"start\": $start}}"
}
apply bootstrap
[ "$start" = true ] || exit 0

# the salt role through the master just started, as every later highstate runs: its own minion (key accepted
# above) syncs rolestack's modules from the served tree, then applies the role
tries=0
until timeout 30 "$bin/salt-call" --out=quiet test.ping 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 10 ] || { echo "master.sh: the master does not answer its own minion (journalctl -u salt-master)" >&2; exit 1; }
    sleep 3
done
"$bin/salt-call" --out=quiet saltutil.sync_all
"$bin/salt-call" --retcode-passthrough ${ROLESTACK_BOOTSTRAP_OUT:-} state.apply salt
