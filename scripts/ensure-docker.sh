#!/bin/bash
# Make sure a Docker engine answers `docker info`.
# Installs docker.io from Debian when dockerd is missing, and starts dockerd
# without a bridge or iptables rules, so that no container can ever sit on a
# private-range network: containers use --network host or --network none.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/jctotp-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

if ! command -v dockerd >/dev/null; then
    echo "ensure-docker: installing docker.io from Debian"
    # Keep the package from starting its own dockerd (with the default
    # docker0 bridge on 172.17.0.0/16): we start ours below, bridgeless.
    rcd=/usr/sbin/policy-rc.d
    [ -e "$rcd" ] || { printf '#!/bin/sh\nexit 101\n' >"$rcd"; chmod 755 "$rcd"; added=$rcd; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    rm -f "${added:-/nonexistent}"
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

# A dockerd (and its containerd) killed without their cleanup leave pid files: a new
# dockerd then refuses to start, or waits for a containerd that is gone. The numbers
# may be some other process's, or a thread's, by now: ask for the program by name.
stale() {   # stale PIDFILE PROGRAM
    [ -f "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" != "$2" ]
}
for entry in /var/run/docker.pid:dockerd /var/run/docker/containerd/containerd.pid:containerd; do
    if stale "${entry%%:*}" "${entry##*:}"; then
        echo "ensure-docker: removing the stale ${entry%%:*} (no ${entry##*:} has that pid)"
        rm -f "${entry%%:*}"
    fi
done

echo "ensure-docker: starting dockerd (log: $log)"
nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$log" 2>&1 &
for _ in $(seq "$wait_s"); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "ensure-docker: dockerd did not answer within ${wait_s}s; see $log" >&2
tail -20 "$log" >&2
exit 1
