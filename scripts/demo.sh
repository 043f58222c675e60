#!/bin/bash
# The live demo: sshd with pam_jctotp in a container on 127.0.0.1:2222 and a
# user "demo" inside a 7-day enrollment period.
#   scripts/demo.sh        build what is missing, (re)start the demo
#   scripts/demo.sh stop   stop and remove it
# Run as root on Debian 12: installs docker.io, debootstrap and the build
# tools when missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
name=jctotp-demo
port=${DEMO_PORT:-2222}
image=${JCTOTP_IMAGE:-jctotp:dev}

case ${1:-start} in
    stop)
        if docker rm -f "$name" >/dev/null 2>&1; then echo "demo stopped"; else echo "no demo running"; fi
        exit 0 ;;
    start) ;;
    *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (installs packages, runs containers)" >&2; exit 1; }

listening() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; }

command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
JCTOTP_IMAGE=$image "$repo/scripts/build-image.sh"
docker rm -f "$name" >/dev/null 2>&1 || true
if listening; then
    echo "demo: something already listens on 127.0.0.1:$port (set DEMO_PORT)" >&2
    exit 1
fi
docker run -d --name "$name" --network host -e SSHD_PORT="$port" "$image" >/dev/null
for _ in $(seq 50); do listening && break; sleep 0.2; done
listening || { docker logs "$name" >&2; echo "demo: sshd did not start" >&2; exit 1; }

password=$(tr -dc 'A-HJ-NP-Za-km-z2-9' </dev/urandom | head -c 14 || true)
docker exec -i "$name" jctotp user add demo --password-stdin <<<"$password" >/dev/null
docker exec "$name" jctotp mfa enable demo --enrollment-days 7 >/dev/null

cat <<EOT

pam_jctotp demo: sshd on 127.0.0.1:$port (container $name)

  ssh -p $port demo@127.0.0.1
  password: $password

After the password, the login draws a QR code and shows the key in groups
of four. Scan the QR code with an authenticator app (Google Authenticator,
FreeOTP, JumpCloud Protect, ...), or compute the code on this machine:

  oathtool --totp -b KEY        (KEY: the key shown, spaces removed)

and type the 6-digit code to finish enrollment (Enter skips: 7 days left).
Later logins ask for the password, then "Verification code:".

  Admin inside:  docker exec $name jctotp user show demo
  Stop:          $0 stop
(If ssh warns that the host key changed, each demo has new host keys:
 ssh-keygen -R '[127.0.0.1]:$port')
EOT
