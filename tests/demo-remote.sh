#!/bin/sh
# make demo-remote: an unmodified Nix 2.8 client builds through the loader as a remote builder
# over SSH, then the consumer verifies what it got (docs/hosting.md, docs/consuming.md).
# Everything lives in a temporary directory: sshd on a loopback port with generated keys (no
# system configuration read or touched), the client's chroot store, the builder's chroot store.
# Runs as root (sshd's privilege separation needs it), as CI does.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=$(mktemp -d /tmp/demo-remote.XXXXXX)
PORT=${DEMO_PORT:-2222}
cleanup() { [ -f "$D/sshd.pid" ] && kill "$(cat "$D/sshd.pid")" 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N '' -f "$D/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$D/client_key"
cp "$D/client_key.pub" "$D/authorized_keys"
echo "[127.0.0.1]:$PORT $(cat "$D/host_key.pub")" > "$D/known_hosts"
mkdir -p /run/sshd
cat > "$D/loader-remote" <<WRAP
#!/bin/sh
export LOADER_EVIDENCE_DIR=$D/evidence LOADER_AGENT=$ROOT/target/agent.bin LOADER_ACCEL=\${LOADER_ACCEL:-auto}
exec $ROOT/target/debug/loader "\$@"
WRAP
chmod +x "$D/loader-remote"
/usr/sbin/sshd -f /dev/null -p "$PORT" -o ListenAddress=127.0.0.1 -o HostKey="$D/host_key" \
  -o AuthorizedKeysFile="$D/authorized_keys" -o PidFile="$D/sshd.pid" -o StrictModes=no -o UsePAM=no \
  -o PermitRootLogin=prohibit-password
sleep 0.5
export NIX_SSHOPTS="-p $PORT -i $D/client_key -o UserKnownHostsFile=$D/known_hosts -o BatchMode=yes"
mkdir -p "$ROOT/target/e2e-busybox/bin"; cp -n /bin/busybox "$ROOT/target/e2e-busybox/bin/" 2>/dev/null || true
BUILDERS="ssh://root@127.0.0.1?remote-program=$D/loader-remote&remote-store=$D/builder x86_64-linux - 2"
echo "== nix-build --store $D/client tests/e2e/corpus.nix -A ok.single-file -A ok.consumes-output --max-jobs 0 --builders '$BUILDERS'"
nix-build --store "$D/client" "$ROOT/tests/e2e/corpus.nix" --argstr busyboxDir "$ROOT/target/e2e-busybox" \
  -A ok.single-file -A ok.consumes-output --no-out-link --max-jobs 0 --option substituters '' \
  --builders "$BUILDERS" > "$D/paths"
echo "== evidence kept by the builder ($D/evidence):"; ls "$D/evidence"
for p in $(cat "$D/paths"); do
  h=$(basename "$p" | cut -c1-32)
  echo "== measurement-tool verify-path $p --store $D/client --evidence …/$h.attestation.json --allow-unattested"
  echo "   (UNATTESTED: no TEE here, so only --allow-unattested accepts it, and it is NOT verified)"
  "$ROOT/target/debug/measurement-tool" verify-path "$p" --store "$D/client" --evidence "$D/evidence/$h.attestation.json" --allow-unattested
done
