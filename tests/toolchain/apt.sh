# Sourced by fetch.sh and pin.sh: an apt of our own for Debian bookworm (binary and source
# entries), its lists and cache under $CACHE/apt, so nothing in /etc/apt or /var/lib/apt is read
# or changed and the host's own sources do not matter. Indexes are checked against Debian's
# archive keyring as apt always does; the files we keep are pinned by SHA-256 on top.
APT_DIR="$CACHE/apt"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

apt_setup() {
    [ -r "$KEYRING" ] || { echo "$0: $KEYRING missing (apt: debian-archive-keyring)" >&2; exit 1; }
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/parts" "$APT_DIR/prefs"
    local m=http://deb.debian.org
    cat > "$APT_DIR/sources.list" <<EOF
deb [signed-by=$KEYRING] $m/debian bookworm main
deb [signed-by=$KEYRING] $m/debian bookworm-updates main
deb [signed-by=$KEYRING] $m/debian-security bookworm-security main
deb-src [signed-by=$KEYRING] $m/debian bookworm main
EOF
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
        -o "Dir::Etc::SourceParts=$APT_DIR/parts"
        -o "Dir::Etc::Preferences=$APT_DIR/prefs/none"
        -o "Dir::Etc::PreferencesParts=$APT_DIR/prefs"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "APT::Architecture=amd64"
        -o "APT::Architectures=amd64"
        -o "Acquire::Languages=none"
        -o "APT::Sandbox::User=root"
    )
    # One index download per day at most.
    local stamp="$APT_DIR/updated"
    if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
        apt-get "${APT_OPTS[@]}" -qq update >&2
        touch "$stamp"
    fi
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
