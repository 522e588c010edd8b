#!/usr/bin/env bash
# Installation test of the amd64 package in a clean Debian 12 root (debootstrap + chroot):
#   cross/deb/install-test.sh [DEB]   (default target/dist/edgecsm_*_amd64.deb: cross/deb/build.sh amd64)
# install -> every file, the conffile, the user, nothing enabled or running, the daemon (as
# user edgecsm, configured by /etc/edgecsm/serve.conf) answering `status` -> reinstall over an
# edited conffile -> `systemctl enable` and a drop-in, as a user would -> remove (keeps the
# configuration, the models and the user) -> purge: the root is then as it was before, file
# for file. Needs root (sudo is used otherwise), network access to the Debian mirror
# ($DEBIAN_MIRROR, default http://deb.debian.org/debian) and ~250 MB in $TMPDIR; caches nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

deb=${1:-$(ls target/dist/edgecsm_*_amd64.deb 2>/dev/null | tail -1)}
[ -f "$deb" ] || { echo "no amd64 package (cross/deb/build.sh amd64 makes one)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [ "$(id -u)" -ne 0 ]; then exec sudo -E "$0" "$@"; fi
# debootstrap; socat to talk to the daemon; systemd for systemd-analyze and systemctl --root
for c in debootstrap:debootstrap socat:socat systemd-analyze:systemd systemctl:systemd; do
    command -v "${c%%:*}" >/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${c#*:}" >/dev/null
done

work=$(mktemp -d)
root="$work/root"
daemon=""
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then kill -KILL "$daemon"; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "install-test: FAILED: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
in_root() { chroot "$root" "$@"; }

echo "== debootstrap: Debian 12 minbase + adduser, libasound2 ($mirror)"
start=$SECONDS
debootstrap --variant=minbase --include=adduser,libasound2 bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
echo "  $((SECONDS - start)) s"

# What a package may change for good: dpkg's and apt's own records, logs, caches, and the
# shadow tools' backups (/etc/passwd- etc. hold the previous state by design).
snapshot() {
    (
        cd "$root"
        find . -xdev \( -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/cache \
            -o -path ./tmp -o -path ./proc -o -path ./sys -o -path ./dev -o -path ./run \) -prune \
            -o ! -regex '\./etc/\(passwd\|group\|shadow\|gshadow\|subuid\|subgid\)-' \
            -printf '%p %y %m %u:%g %s %l\n'
        find ./etc -xdev -type f ! -regex '\./etc/\(passwd\|group\|shadow\|gshadow\|subuid\|subgid\)-' \
            -exec sha256sum {} +
    ) | LC_ALL=C sort
}
snapshot >"$work/before"
echo "  $(wc -l <"$work/before") paths recorded"

name=$(basename "$deb")
cp "$deb" "$root/tmp/$name"

echo "== dpkg -i $name"
in_root dpkg -i "/tmp/$name" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
if grep -qiE "warning|error" "$work/dpkg.log"; then cat "$work/dpkg.log"; fail "dpkg -i printed warnings"; fi
[ "$(in_root dpkg-query -W -f='${Status}' edgecsm)" = "install ok installed" ] || fail "not installed"
ok "installed"
# every file and directory of the package, as packaged (type, mode, owner) and intact
dpkg-deb --fsys-tarfile "$deb" | tar -t -v --numeric-owner | while read -r perm owner _ _ _ path _; do
    p=${path#.}
    [ -n "$p" ] && [ "$p" != / ] || continue
    p=${p%/}
    [ -e "$root$p" ] || fail "missing $p"
    want_type=${perm:0:1}
    got=$(stat -L -c '%A %u/%g' "$root$p") # -L: /lib is a link to usr/lib in the root
    [ "${got%% *}" = "$perm" ] || fail "$p: mode ${got%% *}, packaged $perm"
    [ "${got#* }" = "$owner" ] || fail "$p: owner ${got#* }, packaged $owner"
    case "$want_type" in -) [ -f "$root$p" ] || fail "$p is not a file" ;; d) [ -d "$root$p" ] || fail "$p is not a directory" ;; esac
done
n=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -vc '/$')
[ -z "$(in_root dpkg --verify edgecsm)" ] || fail "dpkg --verify: $(in_root dpkg --verify edgecsm)"
ok "all $n files present with the packaged mode and owner; checksums verified"
[ "$(in_root dpkg-query -W -f='${Conffiles}' edgecsm | awk 'NF { print $1 }')" = /etc/edgecsm/serve.conf ] \
    || fail "conffiles: $(in_root dpkg-query -W -f='${Conffiles}' edgecsm)"
ok "/etc/edgecsm/serve.conf is the one conffile"
[ "$(in_root /usr/bin/edgecsm --version)" = "edgecsm $(dpkg-deb -f "$deb" Version | cut -d- -f1)" ] \
    || fail "edgecsm --version in the root: $(in_root /usr/bin/edgecsm --version 2>&1)"
ok "/usr/bin/edgecsm runs on the dependencies the package pulled in"

IFS=: read -r _ _ uid gid _ home shell < <(in_root getent passwd edgecsm) || fail "no user edgecsm"
[ "$uid" -lt 1000 ] || fail "edgecsm is not a system user (uid $uid)"
[ "$home" = /var/lib/edgecsm ] && [ "$shell" = /usr/sbin/nologin ] || fail "edgecsm: home $home, shell $shell"
[ "$(in_root getent group edgecsm | cut -d: -f3)" = "$gid" ] || fail "primary group is not edgecsm"
in_root id -nG edgecsm | tr ' ' '\n' | grep -qx audio || fail "edgecsm is not in audio"
[ ! -e "$root/var/lib/edgecsm/.profile" ] || fail "a home directory was populated"
ok "system user edgecsm (uid $uid), group edgecsm, in audio, no login"

[ -z "$(find "$root/etc/systemd" -name 'edgecsm*' 2>/dev/null)" ] || fail "the unit was enabled: $(find "$root/etc/systemd" -name 'edgecsm*')"
for exe in /proc/[0-9]*/exe; do
    [ "$(readlink "$exe" 2>/dev/null)" != "$root/usr/bin/edgecsm" ] || fail "an edgecsm process was started"
done
ok "nothing enabled, nothing started"

# the unit's directives, checked by this machine's systemd (ExecStart pointed at the root's binary)
sed "s|^ExecStart=/usr/bin/edgecsm|ExecStart=$root/usr/bin/edgecsm|" \
    "$root/lib/systemd/system/edgecsm.service" >"$work/edgecsm.service"
out=$(systemd-analyze verify "$work/edgecsm.service" 2>&1) || true
[ -z "$out" ] || fail "systemd-analyze verify: $out"
ok "systemd-analyze verify: clean"

echo "== the daemon as user edgecsm, configured by /etc/edgecsm/serve.conf"
# as installed, the configured model is not there yet: the error names the file's model path
out=$(in_root setpriv --reuid=edgecsm --regid=edgecsm --init-groups \
    /usr/bin/edgecsm serve --config /etc/edgecsm/serve.conf 2>&1) && fail "serve started without a model"
[[ "$out" == "error: model directory /var/lib/edgecsm/models/csm-1b does not exist" ]] || fail "serve said: $out"
ok "without a model: $out"
# a model copied in as the README says; devices and socket overridden on the command line
# (the file plugin instead of a sound card; /run/edgecsm exists only under systemd)
cp -R models/csm-tiny "$root/var/lib/edgecsm/models/csm-1b"
cat >"$root/tmp/asound.conf" <<'EOF'
pcm.cap { type file slave.pcm { type null } file "/dev/null" infile "/dev/zero" format "raw" }
pcm.play { type file slave.pcm { type null } file "/dev/null" format "raw" }
EOF
install -d -o "$uid" -g "$gid" -m 0700 "$root/tmp/run"
ALSA_CONFIG_PATH=/tmp/asound.conf chroot "$root" setpriv --reuid=edgecsm --regid=edgecsm --init-groups \
    /usr/bin/edgecsm serve --config /etc/edgecsm/serve.conf --capture cap --playback play \
    --socket /tmp/run/edgecsm.sock >"$work/serve.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
    [ -S "$root/tmp/run/edgecsm.sock" ] && break
    kill -0 "$daemon" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited"; }
    sleep 0.1
done
status=$(echo '{"op":"status"}' | timeout 10 socat -t 5 - "UNIX-CONNECT:$root/tmp/run/edgecsm.sock") || true
[[ "$status" == *'"ok":true'* && "$status" == *'"threads":3'* && "$status" == *'/var/lib/edgecsm/models/csm-1b'* ]] \
    || { cat "$work/serve.log"; fail "status: $status"; }
ok "serve answered status (threads 3 and the model from the file, devices from the command line)"
# (serve does not stop on SIGTERM with an always-ready file-plugin capture: cross/README.md)
kill -KILL "$daemon"
wait "$daemon" 2>/dev/null || true
daemon=""
rm -rf "$root/tmp/run" "$root/tmp/asound.conf"

echo "== reinstall over an edited conffile; enable the unit and add a drop-in, as a user would"
echo "# edited on the board" >>"$root/etc/edgecsm/serve.conf"
in_root dpkg -i "/tmp/$name" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "reinstall"; }
grep -qx "# edited on the board" "$root/etc/edgecsm/serve.conf" || fail "reinstall replaced the edited conffile"
[ "$(in_root id -u edgecsm)" = "$uid" ] || fail "reinstall changed the user"
ok "reinstall keeps the edited configuration and the user"
systemctl --root="$root" enable edgecsm.service >/dev/null 2>&1 || fail "systemctl --root enable"
[ -L "$root/etc/systemd/system/multi-user.target.wants/edgecsm.service" ] || fail "enable made no link"
install -D -m 0644 "$root/usr/share/doc/edgecsm/examples/realtime.conf" \
    "$root/etc/systemd/system/edgecsm.service.d/realtime.conf"
ok "enabled, with the real-time drop-in"

echo "== dpkg -r edgecsm"
in_root dpkg -r edgecsm >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -r"; }
[ "$(in_root dpkg-query -W -f='${Status}' edgecsm)" = "deinstall ok config-files" ] || fail "status after remove"
for p in /usr/bin/edgecsm /lib/systemd/system/edgecsm.service /usr/share/doc/edgecsm; do
    [ ! -e "$root$p" ] || fail "remove left $p"
done
[ -f "$root/etc/edgecsm/serve.conf" ] && [ -f "$root/var/lib/edgecsm/models/csm-1b/config.json" ] \
    && in_root getent passwd edgecsm >/dev/null || fail "remove took the configuration, the models or the user"
ok "program files gone; configuration, models and user kept"

echo "== dpkg -P edgecsm"
in_root dpkg -P edgecsm >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -P"; }
in_root dpkg-query -W edgecsm >/dev/null 2>&1 && fail "dpkg still knows edgecsm after purge"
in_root getent passwd edgecsm >/dev/null && fail "purge left the user"
in_root getent group edgecsm >/dev/null && fail "purge left the group"
grep -q edgecsm "$root/etc/group" "$root/etc/gshadow" && fail "purge left edgecsm in a group"
snapshot >"$work/after"
if ! diff -u "$work/before" "$work/after" >"$work/diff"; then
    cat "$work/diff"
    fail "the root differs from before the installation"
fi
ok "the root is as before the installation ($(wc -l <"$work/after") paths compared)"
echo "install-test: ok"
