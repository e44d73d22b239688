#!/usr/bin/env bash
# Check the README's two commands on a bare Debian 12, as root, as a new user would type them.
#
# debootstraps bookworm (plus git and ca-certificates, nothing else) into $FRESH_DIR, clones
# this repository's HEAD commit into it, and runs there, in a network namespace of its own
# (loopback only, so the chroot starts its own RabbitMQ and servers) and a PID namespace of its
# own (everything it started ends with it):
#   1. scripts/run.sh, then the README's walk-through against that cluster, then Ctrl-C;
#   2. scripts/test.sh;
#   3. scripts/run.sh again with no way out of the namespace at all: set up once, it must start
#      offline.
# The chroot's apt and pip reach the Debian mirror and PyPI only through scripts/netns_proxy.py
# (set in its /etc/apt/apt.conf.d and /etc/pip.conf, as a machine behind a proxy would be), so
# nothing the commands run sees a proxy variable; the CA certificates this host added
# (/usr/local/share/ca-certificates, for a TLS-inspecting egress) are added there too, and pip
# told to use the system's CA store, as on this host. Needs root, debootstrap (installed when
# missing), `ip netns` and unshare. Takes about 15 minutes; not part of the test suite.
#   FRESH_DIR (default /tmp/tessera-fresh-debian) is removed first and, unless KEEP=1, at the
#   end; its *.log files are kept. DEBIAN_MIRROR defaults to http://deb.debian.org/debian.
#   FRESH_BASE=FILE.tar: unpack that pristine debootstrap result instead of running debootstrap
#   (it is made there when missing), to repeat the check faster.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FRESH_DIR=${FRESH_DIR:-/tmp/tessera-fresh-debian}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$FRESH_DIR/root
NS=tessera-fresh-$$
PORT=3128
HOSTNAME_INSIDE=tessera-fresh

[ "$(id -u)" = 0 ] || { echo "fresh_debian_check: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap </dev/null >/dev/null; }
commit=$(git -C "$REPO" rev-parse HEAD)
mirror_host=$(echo "$MIRROR" | sed -E 's|^[a-z]+://([^/:]+).*|\1|')

proxy_pid=
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    # the chroot's mounts live only in its own mount namespace, gone with it
    if [ "${KEEP:-0}" != 1 ] && ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

[ -e "$ROOT" ] && grep -q " $ROOT/" /proc/mounts && {
    echo "fresh_debian_check: something is mounted under $ROOT; not removing it" >&2; exit 1; }
rm -rf "$FRESH_DIR"
mkdir -p "$FRESH_DIR"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [ -n "${FRESH_BASE:-}" ] && [ -f "$FRESH_BASE" ]; then
    echo "fresh_debian_check: unpacking the debootstrap result $FRESH_BASE into $ROOT"
    mkdir "$ROOT"
    tar -xpf "$FRESH_BASE" -C "$ROOT"
else
    echo "fresh_debian_check: debootstrap bookworm into $ROOT (log $FRESH_DIR/debootstrap.log)"
    debootstrap --include=git,ca-certificates bookworm "$ROOT" "$MIRROR" \
        >"$FRESH_DIR/debootstrap.log" 2>&1
    [ -n "${FRESH_BASE:-}" ] && tar -cpf "$FRESH_BASE" -C "$ROOT" .
fi

# What a freshly installed machine has: a host name that resolves, and here a proxy setting.
echo "$HOSTNAME_INSIDE" > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$HOSTNAME_INSIDE" > "$ROOT/etc/hosts"
echo "Acquire::http::Proxy \"http://127.0.0.1:$PORT\";" > "$ROOT/etc/apt/apt.conf.d/90proxy"
printf '[global]\nproxy = http://127.0.0.1:%s\ncert = /etc/ssl/certs/ca-certificates.crt\n' \
    "$PORT" > "$ROOT/etc/pip.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null
fi

git clone -q "$REPO" "$ROOT/root/tessera"
git -C "$ROOT/root/tessera" checkout -q "$commit"

cat > "$ROOT/root/check.sh" <<'INSIDE'
#!/usr/bin/env bash
# Runs inside the chroot: the README's commands as written, from the clone's directory.
set -uo pipefail
set -m    # background jobs keep SIGINT, so `kill -INT` is the user's Ctrl-C
cd /root/tessera
phase=$1

start_cluster() {   # scripts/run.sh in the background until it says it runs; $1: log
    scripts/run.sh >"$1" 2>&1 &
    cluster=$!
    for _ in $(seq 1200); do
        grep -q "Ctrl-C stops everything" "$1" && return 0
        kill -0 "$cluster" 2>/dev/null || break
        sleep 1
    done
    echo "check: scripts/run.sh did not start:"; cat "$1"; return 1
}

stop_cluster() {
    kill -INT "$cluster"
    wait "$cluster"; local rc=$?
    echo "check: scripts/run.sh exited $rc after Ctrl-C"
    return "$rc"
}

if [ "$phase" = online ]; then
    echo "== scripts/run.sh"
    start_cluster /root/run.log || exit 1
    grep -E "^(setup|Tessera)" /root/run.log
    echo "== the README's walk-through"
    awk '/^```sh readme-test=walkthrough$/{f=1; next} /^```$/{f=0} f' README.md > /root/walk.sh
    bash -euo pipefail /root/walk.sh; walk=$?
    echo "check: walk-through exited $walk; shard files: $(ls .cluster/stg/*/objects | grep -c '=\.')"
    stop_cluster || exit 1
    [ "$walk" = 0 ] || exit 1
    echo "== scripts/test.sh"
    scripts/test.sh </dev/null 2>&1 | tee /root/test.log | grep -Ev '^(\.|s|F|E|x)+ *\[ *[0-9]+%\]$'
    exit "${PIPESTATUS[0]}"
else
    echo "== scripts/run.sh, offline"
    start_cluster /root/run-offline.log || exit 1
    grep -E "^(setup|Tessera)" /root/run-offline.log
    curl -sS -w '\n' http://127.0.2.1:12345/health
    stop_cluster
fi
INSIDE

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

inside() {   # $1: online | offline; a PID namespace that ends everything started in it
    ip netns exec "$NS" unshare --pid --kill-child --mount --uts --propagation private \
        bash -c '
            set -e
            hostname "$2"
            mount -t proc proc "$1/proc"
            mount -t sysfs sys "$1/sys"
            mount --rbind /dev "$1/dev"
            exec chroot "$1" /usr/bin/env -i HOME=/root TERM=dumb CI=true LANG=C.UTF-8 \
                PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
                bash /root/check.sh "$3"
        ' inside "$ROOT" "$HOSTNAME_INSIDE" "$1" </dev/null
}

python3 "$REPO/scripts/netns_proxy.py" --netns "$NS" --port "$PORT" \
    --allow "$mirror_host" pypi.org files.pythonhosted.org 2>"$FRESH_DIR/proxy.log" &
proxy_pid=$!
for _ in $(seq 30); do
    grep -q listening "$FRESH_DIR/proxy.log" && break
    sleep 1
done

echo "fresh_debian_check: commit $commit, in $ROOT (network namespace $NS)"
set +e
inside online 2>&1 | tee "$FRESH_DIR/online.log"
online=${PIPESTATUS[0]}
kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null; proxy_pid=
inside offline 2>&1 | tee "$FRESH_DIR/offline.log"
offline=${PIPESTATUS[0]}
set -e

summary=$(grep -E '^[0-9]+ passed' "$FRESH_DIR/online.log" | tail -1)
{
    echo "started $started, ended $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
    echo "online (run.sh, walk-through, test.sh): exit $online; pytest: ${summary:-no summary}"
    echo "offline (run.sh with no network): exit $offline"
} | tee "$FRESH_DIR/result.log"
[ "$online" = 0 ] && [ "$offline" = 0 ]
