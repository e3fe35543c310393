# edge_lib.sh — what install_edge_service.sh and upgrade_edge_service.sh share. Sourced by
# both; they define say and die first.

# install_version TARGET VERSION WHEELS: a venv with datonis-edge VERSION at TARGET, offline.
# A venv cannot be moved (its scripts name their interpreter by path), so it is built in place
# and marked complete only at the end: an interrupted run is redone from scratch.
install_version() {
    local target=$1 version=$2 wheels=$3
    if [ ! -f "$target/.complete" ]; then
        rm -rf "$target"
        python3 -m venv "$target"
        "$target/bin/pip" install --quiet --no-index --find-links "$wheels" "datonis-edge==$version" \
            || { rm -rf "$target"; die "installing the wheels failed (see above); nothing was switched"; }
        touch "$target/.complete"
    fi
    "$target/bin/datonis-edge" version >/dev/null \
        || die "the installed gateway does not start ($target/bin/datonis-edge version failed); nothing was switched"
}

# switch_current PREFIX TARGET: point PREFIX/current at TARGET atomically (rename over the link)
switch_current() {
    ln -sfn "$2" "$1/current.new" && mv -T "$1/current.new" "$1/current"
}
