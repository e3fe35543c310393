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

# The names a gateway keeps in its data directory (anything else there is not ours).
DATADIR_NAMES="config ha outbox declined console instructions log malformed"

# datadir_entries DIR: which of DATADIR_NAMES hold something in DIR ("config/ outbox/"), or "".
datadir_entries() {
    local dir=$1 name out=""
    for name in $DATADIR_NAMES; do
        if [ -d "$dir/$name" ] && [ -n "$(ls -A "$dir/$name" 2>/dev/null)" ]; then
            out="$out $name/"
        elif [ -f "$dir/$name" ]; then
            out="$out $name"
        fi
    done
    echo "${out# }"
}

# foreign_entries DIR: what in DIR is not a data directory's (so never chown -R it), or "".
foreign_entries() {
    local dir=$1 entry name out=""
    for entry in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$entry" ] || continue
        name=$(basename -- "$entry")
        case " $DATADIR_NAMES lost+found " in *" $name "*) continue ;; esac
        case "$name" in .write-test-*|.install-write-test.*|.moved-from|.datonis-edge-moving) continue ;; esac
        out="$out $name"
    done
    echo "${out# }"
}

# give_tree_to USER DIR: every file under DIR owned by USER. A `sudo datonis-edge run` leaves
# root-owned files the service cannot open; they are given to USER (asked first on a terminal).
# Files of another non-root user mean different uids on the nodes of a shared mount: stop.
give_tree_to() {
    local user=$1 dir=$2 stray count other foreign
    strays() { find "$dir" \( -path "$dir/lost+found" -o -path "$dir/.moved-from" \) -prune -o ! -user "$user" "$@" 2>/dev/null; }
    stray=$(strays -print | head -n 1)
    [ -n "$stray" ] || return 0
    count=$(strays -print | wc -l)
    other=$(strays ! -user root -printf '%u %p\n' | head -n 1)
    if [ -n "$other" ]; then
        die "$dir holds files of another user (${other%% *} owns ${other#* }): on a shared mount the service user $user must have the same uid on every node; align the uids, then run: chown -R $user:$user $dir"
    fi
    foreign=$(foreign_entries "$dir")
    if [ -n "$foreign" ]; then
        die "$stray is owned by root, but $dir also holds files that are not a data directory's ($foreign); use a directory of its own for --datadirpath"
    fi
    if [ "$count" = 1 ] && [ "$stray" = "$dir" ]; then
        say "giving the data directory $dir to $user"
    else
        say "$count files under $dir are owned by root, not by $user (the first: $stray; a gateway run as root leaves such files): the service could not open them"
        if [ -t 0 ] && [ -t 1 ]; then
            local answer
            read -r -p "give them to $user now (chown $user:$user on each)? [Y/n] " answer
            case "$answer" in
                ""|y|Y|yes) ;;
                *) die "not changed; the service will not start until you run: chown -R $user:$user $dir" ;;
            esac
        fi
    fi
    strays -exec chown -h "$user:$user" {} + \
        || die "could not give $dir to $user (a root-squashed NFS mount?); run chown -R $user:$user $dir where the files live"
    [ "$count" = 1 ] && [ "$stray" = "$dir" ] || say "gave the $count files under $dir to $user"
}

# check_writable USER DIR: USER can create a file in DIR, else stop with the fix.
check_writable() {
    local user=$1 dir=$2 probe="$2/.install-write-test.$$"
    su -s /bin/sh "$user" -c "touch '$probe' && rm -f '$probe'" 2>/dev/null \
        || die "the data directory $dir is not writable by user $user; on a shared mount give $user (uid $(id -u "$user")) write access on every node"
}

# move_datadir OLD NEW: move a stopped gateway's data from OLD into NEW (which holds no data),
# copied into NEW first (NEW may be another filesystem), renamed into place, then removed
# from OLD. NEW/.moved-from marks a copy that is complete: an interrupted run resumes there.
move_datadir() {
    local old=$1 new=$2 staging="$2/.datonis-edge-moving" entry
    if [ "$(cat "$new/.moved-from" 2>/dev/null)" != "$old" ]; then
        rm -rf "$staging"
        mkdir -p "$staging"
        say "copying $old into $new"
        cp -a "$old/." "$staging/" \
            || { rm -rf "$staging"; die "copying $old into $new failed (see above); nothing was changed: the service still uses $old"; }
        sync
        for entry in "$staging"/* "$staging"/.[!.]*; do
            [ -e "$entry" ] || continue
            mv -T "$entry" "$new/$(basename -- "$entry")" \
                || die "could not move $entry into $new; move its entries into $new by hand, then run the upgrade again"
        done
        rmdir "$staging"
        echo "$old" > "$new/.moved-from"
        sync
    else
        say "resuming an interrupted move: $new already holds the copy of $old"
        unchanged_since_copy "$old" "$new"
    fi
}

unchanged_since_copy() {
    [ -z "$(find "$1" -newer "$2/.moved-from" -print -quit)" ] \
        || die "$1 changed after it was copied into $2 (did a gateway run on it?); compare them, keep one, remove $2/.moved-from and run the upgrade again"
}

# forget_datadir OLD NEW: after the unit points at NEW, empty OLD (kept: the user's home).
forget_datadir() {
    local old=$1 new=$2
    unchanged_since_copy "$old" "$new"
    find "$old" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    rm -f "$new/.moved-from"
}
