#!/usr/bin/env bash
# pvmlab's quickstart: from a fresh clone to a target installed over the network, in one command.
#
#   sudo scripts/quickstart.sh        (or as root; from any directory)
#
# Steps, each skipped when already done: the Debian packages (scripts/install-deps.sh), npm ci,
# the build, `pvmlab setup`, the lab network, `pvmlab distro pull` (debian-12 for this host's
# architecture, taken from /var/cache/pvmlab when it was built before), the pxeboot stack in the
# background (`pvmlab stack start`), the target (`vm create --pxeboot`), then `vm start --wait`
# while its timeline (`vm events --follow`) is shown until it reports `ready`. The last line is
# the command that opens a shell on it. Any failure stops the script with the reason. A second
# run finds everything done and needs no network.
#
# Environment:
#   PVMLAB_HOME                     the lab lives in $PVMLAB_HOME/.pvmlab (default: ~/.pvmlab)
#   PVMLAB_QUICKSTART_VM            the target's name (default: target1)
#   PVMLAB_QUICKSTART_SKIP_DEPS=1   skip install-deps and npm ci (no network, e.g. in a network
#                                   namespace, with the packages and node_modules already there)
#   PVMLAB_WAIT_TIMEOUT, PVMLAB_ACCEL, ...   passed on to pvmlab as usual
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VM=${PVMLAB_QUICKSTART_VM:-target1}
DISTRO=debian-12
PVMLAB=(node "$ROOT/bin/pvmlab.js")

STEP=''
FOLLOWER=''
STARTED=$SECONDS

say() { printf '%s\n' "$*"; }
header() {
  STEP=$1
  printf '\n==> %s\n' "$1"
}
skipped() { say "    skipped: $*"; }
die() {
  say "quickstart: $*" >&2
  exit 1
}
pvmlab() { "${PVMLAB[@]}" "$@"; }

stop_follower() {
  if [[ -n $FOLLOWER ]]; then
    kill "$FOLLOWER" 2>/dev/null || true
    wait "$FOLLOWER" 2>/dev/null || true
    FOLLOWER=''
  fi
}
on_exit() {
  local rc=$?
  stop_follower
  if ((rc == 130 || rc == 143)); then
    say "quickstart: interrupted${STEP:+ at step \"$STEP\"}; run it again to carry on" >&2
  elif ((rc != 0)) && [[ -n $STEP ]]; then
    say "quickstart: stopped at step '$STEP' (exit $rc); the reason is above" >&2
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Evaluate a JavaScript expression over the JSON on stdin (bound to `d`; the VM's name is `vm`,
# the distro `distro`, the arch `arch`); print the result.
json() {
  # shellcheck disable=SC2016 # JavaScript, not shell
  QS_VM=$VM QS_DISTRO=$DISTRO QS_ARCH=${ARCH:-} node -e '
    let s = "";
    process.stdin.setEncoding("utf8").on("data", (c) => (s += c)).on("end", () => {
      const { QS_VM: vm, QS_DISTRO: distro, QS_ARCH: arch } = process.env;
      const f = new Function("d", "vm", "distro", "arch", `return (${process.argv[1]});`);
      const r = f(JSON.parse(s), vm, distro, arch);
      if (r !== undefined && r !== null) process.stdout.write(String(r));
    });' "$1"
}

# What decides the build's output; the stamps record it after a successful npm ci or build.
lock_hash() { sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1; }
source_hash() {
  (
    cd "$ROOT"
    local inputs=() p
    for p in src test bench bin scripts/bundle.mjs tsconfig.json package.json package-lock.json; do
      [[ -e $p ]] && inputs+=("$p")
    done
    find "${inputs[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
  )
}
NPM_STAMP=$ROOT/node_modules/.pvmlab-quickstart-lock.sha256
BUILD_STAMP=$ROOT/dist/.pvmlab-quickstart-build.sha256

# --- checks -------------------------------------------------------------------------------------
if [[ $(id -u) -ne 0 ]]; then
  say "quickstart: run as root (sudo scripts/quickstart.sh): the lab network, TAP devices and the stack's DHCP need it" >&2
  exit 1
fi
[[ $(uname -s) == Linux ]] || die "this quickstart sets up a Linux host (on macOS, follow the README's Install section)"
command -v node >/dev/null || die "Node.js >= 20.12 is needed (not found on PATH)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 12) ? 0 : 1)' ||
  die "Node.js >= 20.12 is needed (this is $(node --version))"
ARCH=$(node -p '({ x64: "x86_64", arm64: "aarch64" })[process.arch] ?? ""')
[[ -n $ARCH ]] || die "unsupported host architecture $(uname -m) (x86_64 or aarch64)"
APP=$(node -p 'require("node:path").resolve(process.env.PVMLAB_HOME || require("node:os").homedir(), ".pvmlab")')

# --- this machine -------------------------------------------------------------------------------
header "install-deps (Debian packages: QEMU, UEFI firmware, dnsmasq, iPXE, mmdebstrap...)"
if [[ ${PVMLAB_QUICKSTART_SKIP_DEPS:-} == 1 ]]; then
  skipped "PVMLAB_QUICKSTART_SKIP_DEPS=1"
else
  "$ROOT/scripts/install-deps.sh"
fi

header "npm ci"
if [[ ${PVMLAB_QUICKSTART_SKIP_DEPS:-} == 1 ]]; then
  [[ -d $ROOT/node_modules ]] || die "PVMLAB_QUICKSTART_SKIP_DEPS=1 but $ROOT/node_modules is missing: run npm ci first"
  skipped "PVMLAB_QUICKSTART_SKIP_DEPS=1"
elif [[ -f $ROOT/node_modules/.package-lock.json && -f $NPM_STAMP && $(cat "$NPM_STAMP") == "$(lock_hash)" ]]; then
  skipped "node_modules matches package-lock.json"
else
  want=$(lock_hash)
  (cd "$ROOT" && npm ci --no-audit --no-fund)
  printf '%s\n' "$want" >"$NPM_STAMP" # npm ci wiped node_modules: the stamp goes after it
fi

header "build"
want=$(source_hash)
if [[ -f $ROOT/dist/bundle/pvmlab.mjs && -f $BUILD_STAMP && $(cat "$BUILD_STAMP") == "$want" ]]; then
  skipped "dist/ is up to date"
else
  (cd "$ROOT" && npm run build --silent)
  printf '%s\n' "$want" >"$BUILD_STAMP"
  say "    built dist/"
fi

# --- the lab ------------------------------------------------------------------------------------
header "pvmlab setup ($APP)"
if [[ -f $APP/lab.yaml && -f $APP/distros.yaml && (-f $APP/ssh/vm_key || -f $APP/ssh/vm_rsa) ]]; then
  skipped "the lab, its settings and SSH key exist"
else
  pvmlab setup
fi

header "pvmlab network start"
net=$(pvmlab network status --json)
if [[ $(json 'd.up && String(d.detail?.addresses ?? "").length > 0' <<<"$net") == true ]]; then
  skipped "$(json 'd.name' <<<"$net") is up ($(json 'd.detail.addresses.split(" ").filter((a) => !a.includes(":")).join(" ")' <<<"$net"))"
else
  pvmlab network start
fi

header "pvmlab distro pull --distro $DISTRO --arch $ARCH"
# Always asked: it says "already pulled" in a second, and refreshes the installer initrd when
# the installer changed (from the cache, offline).
pvmlab distro pull --distro "$DISTRO" --arch "$ARCH"

header "pvmlab stack start"
stack=$(pvmlab stack status --json)
if [[ $(json 'd.running' <<<"$stack") == true ]]; then
  [[ $(json 'd.healthy' <<<"$stack") == true ]] ||
    die "the stack runs (pid $(json 'd.pid' <<<"$stack")) but does not answer /healthz ($(json 'd.health_error' <<<"$stack")): see pvmlab stack logs; restart it with pvmlab stack stop and run this again"
  skipped "running (pid $(json 'd.pid' <<<"$stack"), $(json 'd.url' <<<"$stack"))"
else
  pvmlab stack start
fi

# --- the target ---------------------------------------------------------------------------------
header "pvmlab vm create $VM --pxeboot --distro $DISTRO"
vms=$(pvmlab vm list --json)
exists=$(json 'd.some((v) => v.name === vm)' <<<"$vms")
if [[ $exists == true ]]; then
  [[ $(json 'd.find((v) => v.name === vm).boot' <<<"$vms") == pxe ]] ||
    die "a VM named $VM exists and is not a PXE VM: remove it (pvmlab vm clean $VM) or pick another name with PVMLAB_QUICKSTART_VM"
  skipped "$VM exists"
  running=$(json 'd.find((v) => v.name === vm).status === "Running"' <<<"$vms")
else
  pvmlab vm create "$VM" --pxeboot --distro "$DISTRO" --arch "$ARCH"
  running=false
fi

# The stack watches the VM definitions; give it a moment to learn a new one.
timeline_json() {
  for _ in $(seq 1 20); do
    if pvmlab vm events "$VM" --json 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  pvmlab vm events "$VM" --json # the error, this time shown
}
ready=$(timeline_json | json 'd.some((e) => e.type === "ready")')

show_failure() {
  local log=$APP/logs/$VM.log
  say "" >&2
  say "--- the end of $VM's console ($log):" >&2
  pvmlab vm logs "$VM" --no-follow 2>&1 | tail -n 20 >&2 || true
  say "--- $VM's timeline (pvmlab vm events $VM):" >&2
  pvmlab vm events "$VM" >&2 || true
}

if [[ $running == true && $ready == true ]]; then
  header "pvmlab vm start $VM --wait"
  skipped "$VM is installed and running; its timeline:"
  pvmlab vm events "$VM"
elif [[ $running == true ]]; then
  # Started earlier (a quickstart interrupted while it waited): wait for this boot's install.
  header "pvmlab vm start $VM --wait"
  skipped "$VM is running, not installed yet; following its install"
  since=$(stat -c %Y "$APP/pids/$VM.pid") # QEMU's start
  timeout=${PVMLAB_WAIT_TIMEOUT:-600}
  "${PVMLAB[@]}" vm events "$VM" --follow &
  FOLLOWER=$!
  deadline=$((SECONDS + timeout))
  while :; do
    # shellcheck disable=SC2016 # JavaScript, not shell
    state=$(pvmlab vm events "$VM" --json | QS_SINCE=$since json '
      (() => {
        const fresh = d.filter((e) => Date.parse(e.at) >= Number(process.env.QS_SINCE) * 1000);
        const failed = fresh.find((e) => /^(installer|ipxe)\.failed$/.test(e.type));
        return fresh.some((e) => e.type === "ready") ? "ready" : failed ? `failed: ${failed.type}` : "";
      })()')
    [[ $state == ready ]] && break
    if [[ $state == failed* || $SECONDS -ge $deadline ]]; then
      stop_follower
      show_failure
      die "$VM was not installed (${state:-no ready within $timeout s})"
    fi
    [[ $(pvmlab vm list --json | json 'd.find((v) => v.name === vm)?.status') == Running ]] || {
      stop_follower
      show_failure
      die "$VM stopped before it reported ready"
    }
    sleep 3
  done
  sleep 1
  stop_follower
elif [[ $ready == true ]]; then
  # Installed earlier, powered off since: it boots its disk (the stack would not reinstall it).
  header "pvmlab vm start $VM (installed: boots its disk)"
  pvmlab vm start "$VM"
  timeout=${PVMLAB_WAIT_TIMEOUT:-600}
  say "Waiting for SSH on $VM (up to $timeout s)"
  deadline=$((SECONDS + timeout))
  until timeout 30 "${PVMLAB[@]}" vm shell "$VM" -- true </dev/null >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      show_failure
      die "$VM did not answer SSH within $timeout s"
    fi
    sleep 3
  done
  say "$VM answers SSH; its timeline:"
  pvmlab vm events "$VM"
else
  header "pvmlab vm start $VM --wait (network install; a few minutes without KVM)"
  # The timeline, live, while `vm start --wait` waits for `ready` (and fails fast on a failed step).
  "${PVMLAB[@]}" vm events "$VM" --follow &
  FOLLOWER=$!
  if ! pvmlab vm start "$VM" --wait; then
    stop_follower
    show_failure
    die "$VM was not installed (the reason is above)"
  fi
  sleep 1 # the follower prints `ready` as the stack records it
  stop_follower
fi

STEP=''
elapsed=$((SECONDS - STARTED))
say ""
say "quickstart: done in $((elapsed / 60))m $((elapsed % 60))s; $VM is installed and running. Open a shell on it:"
prefix=''
[[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]] && prefix='sudo '
[[ -n ${PVMLAB_HOME:-} ]] && prefix+="PVMLAB_HOME=$(printf '%q' "$PVMLAB_HOME") "
# On PATH (`npm link`) only if that `pvmlab` is this checkout's.
if on_path=$(type -P pvmlab) && [[ $on_path -ef $ROOT/bin/pvmlab.js ]]; then
  say "${prefix}pvmlab vm shell $VM"
else
  say "${prefix}node $(printf '%q' "$ROOT/bin/pvmlab.js") vm shell $VM"
fi
