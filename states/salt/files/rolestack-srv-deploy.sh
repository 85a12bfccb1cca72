#!/bin/sh
# rolestack-srv-deploy GIT_DIR SERVED_DIR [BRANCH]: serve the tip of BRANCH (default main) of the bare repository
# GIT_DIR as SERVED_DIR/current. Managed by the salt role (states/salt/srv.sls); run by the repository's
# post-receive hook after each push, and by the role when current is not the tip.
#
# The commit is unpacked into SERVED_DIR/releases/<commit> first; then the symlink current is replaced in one
# rename(2): the master reads either the old tree or the new one, never a half-written one. The release in use
# and the two newest others are kept (a rollback is `ln -sfn releases/<commit> current.new; mv -T ...`).
set -eu
git_dir=$1 served=$2 branch=${3:-main}
umask 007  # group rolestack-config may deploy and prune too; others read nothing (the pillar holds secrets)
commit=$(git --git-dir="$git_dir" rev-parse -q --verify "refs/heads/$branch^{commit}") || {
    echo "rolestack-srv-deploy: $git_dir has no branch $branch: nothing to serve" >&2
    exit 1
}
release=$served/releases/$commit
if [ ! -d "$release" ]; then
    tmp=$(mktemp -d "$served/releases/.new-XXXXXX")
    git --git-dir="$git_dir" archive --format=tar "$commit" | tar -x -C "$tmp"
    chmod --reference="$served/releases" "$tmp"
    mv -T "$tmp" "$release"
fi
if [ "$(readlink "$served/current" || true)" != "releases/$commit" ]; then
    ln -sfn "releases/$commit" "$served/.current.new"
    mv -T "$served/.current.new" "$served/current"
    echo "rolestack-srv-deploy: $served/current is now $commit"
fi
# prune: keep the release in use and the two newest others
ls -1t "$served/releases" | grep -v -x -e "$commit" -e '\..*' | tail -n +3 | while read -r old; do
    rm -rf "${served:?}/releases/$old"
done
