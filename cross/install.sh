#!/usr/bin/env bash
# Installs the edgecsm daemon on a board (Raspberry Pi, Jetson; any systemd Linux), as root:
# a system user `edgecsm` in group `audio`, the binary in /usr/local/bin, the model in
# /var/lib/edgecsm/model, the device choice in /etc/default/edgecsm, the systemd unit
# (cross/systemd/edgecsm.service), enabled and (re)started. Running it again upgrades in place
# and keeps /etc/default/edgecsm unless options change it.
#
#   sudo cross/install.sh --binary ./edgecsm --model ./models/csm-1b \
#        --capture plughw:CARD=Device,DEV=0 --playback plughw:CARD=Headphones,DEV=0
#   sudo cross/install.sh --uninstall [--purge]
#
# Options:
#   --binary PATH     the edgecsm binary for this board (default: ./edgecsm next to this script,
#                     then target/dist/edgecsm-generic)
#   --model DIR       model directory to install (replaces the installed one as a whole)
#   --capture DEV     ALSA capture PCM   (EDGECSM_CAPTURE; first install default: default)
#   --playback DEV    ALSA playback PCM  (EDGECSM_PLAYBACK; first install default: default)
#   --threads N       compute threads    (EDGECSM_THREADS; first install default: 3)
#   --realtime        also install the drop-in edgecsm.service.d/realtime.conf (CPUAffinity,
#                     LimitRTPRIO); --no-realtime removes it
#   --no-start        install and enable, but do not (re)start now
#   --root DIR        install into DIR as a staging root (packaging, tests): files only; the
#                     user is created only if DIR/etc/passwd exists; systemctl is not run
#   --dry-run         print what would be done, change nothing
#   --uninstall       stop, disable and remove the unit and the binary; keeps the model, the
#                     settings and the user unless --purge
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
UNIT_SRC="$HERE/systemd/edgecsm.service"
RT_SRC="$HERE/systemd/realtime.conf"
DOC_SRC="$HERE/README.md"

BIN=""
MODEL=""
CAPTURE=""
PLAYBACK=""
THREADS=""
REALTIME=""
START=1
ROOT=""
DRY=0
UNINSTALL=0
PURGE=0

die() { echo "install.sh: $*" >&2; exit 1; }
need_arg() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) need_arg "$@"; BIN="$2"; shift 2 ;;
    --model) need_arg "$@"; MODEL="$2"; shift 2 ;;
    --capture) need_arg "$@"; CAPTURE="$2"; shift 2 ;;
    --playback) need_arg "$@"; PLAYBACK="$2"; shift 2 ;;
    --threads) need_arg "$@"; THREADS="$2"; shift 2 ;;
    --realtime) REALTIME=yes; shift ;;
    --no-realtime) REALTIME=no; shift ;;
    --no-start) START=0; shift ;;
    --root) need_arg "$@"; ROOT="$(cd "$2" && pwd)" || die "--root: no directory $2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
case "$THREADS" in ''|[1-9]|[1-9][0-9]) ;; *) die "--threads must be a number from 1 to 99, got '$THREADS'" ;; esac
# device names end up in an EnvironmentFile: no quotes, spaces or shell specials
for d in "$CAPTURE" "$PLAYBACK"; do
  case "$d" in *[!A-Za-z0-9_:,=.-]*) die "ALSA device name '$d' has characters this installer does not accept (allowed: letters, digits, _ : , = . -)" ;; esac
done
if [ "$DRY" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 ...), or try it with --dry-run or --root DIR"
fi

P_BIN="$ROOT/usr/local/bin/edgecsm"
P_LIB="$ROOT/var/lib/edgecsm"
P_MODEL="$P_LIB/model"
P_DEFAULT="$ROOT/etc/default/edgecsm"
P_UNIT="$ROOT/etc/systemd/system/edgecsm.service"
P_DROPIN="$ROOT/etc/systemd/system/edgecsm.service.d"
P_DOC="$ROOT/usr/local/share/doc/edgecsm"

# run CMD...: do it, or print it with --dry-run
run() {
  if [ "$DRY" = 1 ]; then echo "+$(printf ' %q' "$@")"; else "$@"; fi
}
# systemctl only on a live system (not into a staging root), and only if systemd runs
sysctl_() {
  if [ -n "$ROOT" ]; then echo "(staging root: skipped systemctl $*)"; return 0; fi
  if [ "$DRY" = 0 ] && [ ! -d /run/systemd/system ]; then
    echo "(systemd is not running here: skipped systemctl $*)"; return 0
  fi
  run systemctl "$@"
}
# user management: on the live system, or in a staging root that has an /etc/passwd
can_manage_users() { [ -z "$ROOT" ] || [ -e "$ROOT/etc/passwd" ]; }
user_opts() { if [ -n "$ROOT" ]; then echo "--root $ROOT"; fi; }
has_user() {
  if [ -n "$ROOT" ]; then grep -q "^edgecsm:" "$ROOT/etc/passwd" 2>/dev/null; else id edgecsm >/dev/null 2>&1; fi
}
has_group() {
  if [ -n "$ROOT" ]; then grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null; else getent group "$1" >/dev/null; fi
}

if [ "$UNINSTALL" = 1 ]; then
  sysctl_ disable --now edgecsm.service || true
  run rm -f "$P_UNIT" "$P_BIN"
  run rm -rf "$P_DROPIN" "$P_DOC"
  sysctl_ daemon-reload
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$P_LIB"
    run rm -f "$P_DEFAULT"
    if can_manage_users && has_user; then
      # shellcheck disable=SC2046
      run userdel $(user_opts) edgecsm
    fi
    # userdel drops the user's own group only where login.defs says USERGROUPS_ENAB yes
    if can_manage_users && has_group edgecsm && [ "$DRY" = 0 ]; then
      # shellcheck disable=SC2046
      groupdel $(user_opts) edgecsm
    fi
    echo "edgecsm removed, with its model, settings and user."
  else
    echo "edgecsm removed; kept: $P_LIB (model), $P_DEFAULT (settings), the edgecsm user" \
      "(--uninstall --purge removes them)."
  fi
  exit 0
fi

# --- the binary ---
if [ -z "$BIN" ]; then
  for c in "$HERE/edgecsm" "$HERE/../target/dist/edgecsm-generic"; do
    [ -f "$c" ] && { BIN="$c"; break; }
  done
  [ -n "$BIN" ] || die "no binary found: pass --binary PATH (cross/build.sh BOARD makes one)"
fi
[ -f "$BIN" ] || die "--binary: no file $BIN"
if [ -z "$ROOT" ]; then
  # the binary must run here (right architecture, libraries present)
  "$BIN" --version >/dev/null 2>&1 || die "$BIN does not run on this machine ($(uname -m)): wrong board build?"
fi
for f in "$UNIT_SRC" "$RT_SRC"; do [ -f "$f" ] || die "missing $f (run from a checkout of edgecsm)"; done
if [ -n "$MODEL" ]; then
  [ -f "$MODEL/config.json" ] || die "--model: $MODEL has no config.json: not a model directory"
fi

# --- user edgecsm, group audio ---
if can_manage_users; then
  if ! has_group audio; then
    # shellcheck disable=SC2046
    run groupadd $(user_opts) --system audio
  fi
  if has_user; then
    # shellcheck disable=SC2046
    run usermod $(user_opts) -a -G audio edgecsm
  else
    # its own group: reuse one left behind (e.g. by a userdel that kept it)
    own_group=(--user-group)
    if has_group edgecsm; then own_group=(--gid edgecsm); fi
    # shellcheck disable=SC2046
    run useradd $(user_opts) --system "${own_group[@]}" --groups audio --home-dir /var/lib/edgecsm \
      --no-create-home --shell /usr/sbin/nologin --comment "edgecsm speech daemon" edgecsm
  fi
else
  echo "(staging root without /etc/passwd: the edgecsm user is not created)"
fi

# --- binary: a new file renamed over the old one (the running daemon keeps its copy) ---
run install -d -m 0755 "$ROOT/usr/local/bin"
run install -m 0755 "$BIN" "$P_BIN.new"
run mv -f "$P_BIN.new" "$P_BIN"

# --- model: root-owned and read-only for the daemon; swapped as a whole ---
run install -d -m 0755 "$P_LIB"
if [ -n "$MODEL" ]; then
  run rm -rf "$P_MODEL.new" "$P_MODEL.old"
  run cp -R "$MODEL" "$P_MODEL.new"
  run chmod -R u=rwX,go=rX "$P_MODEL.new"
  if [ -z "$ROOT" ] || [ "$(id -u)" -eq 0 ]; then run chown -R 0:0 "$P_MODEL.new"; fi
  if [ -e "$P_MODEL" ] || [ "$DRY" = 1 ]; then run mv "$P_MODEL" "$P_MODEL.old" || true; fi
  run mv "$P_MODEL.new" "$P_MODEL"
  run rm -rf "$P_MODEL.old"
elif [ ! -f "$P_MODEL/config.json" ]; then
  echo "note: no model in $P_MODEL yet: the daemon will not start until one is installed" \
    "(--model DIR)" >&2
fi

# --- settings: created once, then only the keys given on this command line change ---
set_key() { # KEY VALUE
  if grep -q "^$1=" "$P_DEFAULT"; then
    run sed -i "s|^$1=.*|$1=$2|" "$P_DEFAULT"
  elif [ "$DRY" = 1 ]; then
    echo "+ echo $1=$2 >> $P_DEFAULT"
  else
    echo "$1=$2" >>"$P_DEFAULT"
  fi
}
if [ ! -f "$P_DEFAULT" ]; then
  run install -d -m 0755 "$ROOT/etc/default"
  if [ "$DRY" = 1 ]; then
    echo "+ write $P_DEFAULT (capture ${CAPTURE:-default}, playback ${PLAYBACK:-default}, threads ${THREADS:-3})"
  else
    cat >"$P_DEFAULT" <<EOF
# edgecsm daemon settings (read by edgecsm.service; after a change: systemctl restart edgecsm)
# ALSA PCM names as listed by \`edgecsm devices\`, e.g. plughw:CARD=Device,DEV=0 (see
# /usr/local/share/doc/edgecsm/README.md, "Deploying on a Pi / Jetson")
EDGECSM_CAPTURE=${CAPTURE:-default}
EDGECSM_PLAYBACK=${PLAYBACK:-default}
# compute threads: the cores given to the daemon (CPUAffinity in the realtime drop-in)
EDGECSM_THREADS=${THREADS:-3}
EOF
    chmod 0644 "$P_DEFAULT"
  fi
else
  [ -z "$CAPTURE" ] || set_key EDGECSM_CAPTURE "$CAPTURE"
  [ -z "$PLAYBACK" ] || set_key EDGECSM_PLAYBACK "$PLAYBACK"
  [ -z "$THREADS" ] || set_key EDGECSM_THREADS "$THREADS"
fi

# --- unit, optional drop-in, docs ---
run install -D -m 0644 "$UNIT_SRC" "$P_UNIT"
case "$REALTIME" in
  yes) run install -D -m 0644 "$RT_SRC" "$P_DROPIN/realtime.conf" ;;
  no) run rm -f "$P_DROPIN/realtime.conf" ;;
esac
[ ! -f "$DOC_SRC" ] || run install -D -m 0644 "$DOC_SRC" "$P_DOC/README.md"

sysctl_ daemon-reload
sysctl_ enable edgecsm.service
if [ "$START" = 1 ]; then
  sysctl_ restart edgecsm.service
fi

cat <<EOF

edgecsm installed ($P_BIN, model $P_MODEL, settings $P_DEFAULT).
Check it:
  systemctl status edgecsm
  journalctl -u edgecsm -b          # -f to follow
  sudo -u edgecsm edgecsm devices   # the ALSA PCMs the daemon's user can see
  sudo -u edgecsm edgecsm loop --capture DEV --playback DEV --model MIMI_DIR --seconds 10
                                    # stop the daemon first: it holds the devices
Change devices: edit $P_DEFAULT (or rerun with --capture/--playback), then systemctl restart edgecsm
EOF
