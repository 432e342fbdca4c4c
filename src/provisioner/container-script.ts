/**
 * The shell script pvmlab runs in the provisioner to control the pxeboot stack container. It is
 * sent on stdin (`sudo sh -s -- <action> ...`), so nothing has to be installed in the VM first
 * and the script always matches this pvmlab. POSIX sh: Debian's dash runs it.
 *
 * The script answers on stdout with one `<word> <text>` line per fact (`loaded`, `previous`,
 * `started`, `restored`, `warning`, `was`, `state`, `now`, `container`), and fails with one of
 * the exit codes below, the engine's own message on stderr. Only the TS side words messages.
 */

/** Exit codes of the script: each names one failure pvmlab explains in its own words. */
export const SCRIPT_EXIT = {
  /** `docker` is missing or its daemon does not answer `docker info`. */
  engineNotReady: 10,
  /** The tar is not in the provisioner's docker_images share. */
  noTar: 11,
  /** `docker load` failed: nothing was changed. */
  loadFailed: 12,
  /** `docker load` succeeded but named no image. */
  noImageName: 13,
  /** The old container could not be stopped or set aside; it was left as it was. */
  setAsideFailed: 14,
  /** `docker run` of the new image failed; the previous container is back. */
  runFailedRestored: 15,
  /** `docker run` failed and there was no previous container, or it could not be brought back. */
  runFailed: 16,
  /** No container of that name. */
  noContainer: 17,
  /** `docker stop`, `docker ps` or a directory the run needs failed. */
  engineFailed: 18,
  /** The script was called wrongly (a pvmlab bug, not the user's). */
  usage: 64,
} as const;

/** Set aside under this suffix while its replacement starts; removed once the new one runs. */
export const PREVIOUS_SUFFIX = '.pvmlab-previous';

/**
 * `docker container inspect` template: one JSON object of named fields per container. Every
 * value goes through `json`, so docker's strings and podman's time values come out alike
 * (RFC 3339) and nothing depends on an engine's table layout.
 */
export const STATUS_FORMAT =
  '{"name":{{json .Name}},"image":{{json .Config.Image}},"imageId":{{json .Image}},' +
  '"state":{{json .State.Status}},"exitCode":{{json .State.ExitCode}},"created":{{json .Created}},' +
  '"startedAt":{{json .State.StartedAt}},"finishedAt":{{json .State.FinishedAt}},' +
  '"restartPolicy":{{json .HostConfig.RestartPolicy.Name}},"restartCount":{{json .RestartCount}},' +
  '"networkMode":{{json .HostConfig.NetworkMode}},"privileged":{{json .HostConfig.Privileged}}}';

/** Single-quote for sh, so any word survives splitting and expansion. */
export function shQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

const e = SCRIPT_EXIT;

/**
 * The shell function that names the image a docker-archive holds when the engine already has it
 * (its manifest's config digest is the image ID; the tag is set to it again), else prints nothing.
 */
export const PRESENT_IMAGE_FN = `present_image() {
  manifest=$(tar -xOf "$1" manifest.json 2>/dev/null) || return 0
  id=$(printf '%s' "$manifest" | grep -o '"Config":"[0-9a-f]\\{64\\}\\.json"' | head -n 1 | sed 's/.*:"//; s/\\.json"$//')
  [ -n "$id" ] || return 0
  docker image inspect "sha256:$id" >/dev/null 2>&1 || return 0
  tag=$(printf '%s' "$manifest" | grep -o '"RepoTags":\\["[^"]*"' | head -n 1 | sed 's/.*\\["//; s/"$//')
  if [ -n "$tag" ] && docker tag "sha256:$id" "$tag" >/dev/null 2>&1; then
    printf '%s' "$tag"
  else
    printf 'sha256:%s' "$id"
  fi
}
`;

/** The shell function that finds the image name in `docker load`'s output (tested on its own). */
export const LOADED_IMAGE_FN = `# The image docker load names: "Loaded image: NAME" (docker, podman), "Loaded image(s): A,B"
# (older podman), else "Loaded image ID: sha256:..." (docker, an untagged image).
loaded_image() {
  lines=$(printf '%s\\n' "$1" | tr '\\r' '\\n')
  loaded=$(printf '%s\\n' "$lines" | sed -n -e 's/^Loaded image: //p' -e 's/^Loaded image(s): //p' | head -n 1 | cut -d, -f1)
  [ -n "$loaded" ] || loaded=$(printf '%s\\n' "$lines" | sed -n 's/^Loaded image ID: //p' | head -n 1)
  printf '%s' "$loaded" | tr -d ' \\t'
}
`;

/** The script's text; the constants above are written into it, so both sides agree. */
export const CONTAINER_SCRIPT = `#!/bin/sh
# pvmlab: control of the pxeboot stack container (run as root: sh -s -- <action> [args]).
set -u
# A client that goes away (Ctrl-C, a dropped connection) must not cut a replacement in half:
# the work goes on to the end, with nobody to read what it says.
trap '' HUP PIPE

STATUS_FORMAT=${shQuote(STATUS_FORMAT)}
PREVIOUS_SUFFIX=${shQuote(PREVIOUS_SUFFIX)}

fail() {
  code=$1
  shift
  [ -n "$*" ] && printf '%s\\n' "$*" >&2
  exit "$code"
}

# One line of output per fact; a warning's text is kept on its line.
say() {
  printf '%s %s\\n' "$1" "$(printf '%s' "$2" | tr '\\r\\n' '  ')"
}

# The engine answers: a client whose daemon is not running (or not up yet) fails here.
engine_ready() {
  command -v docker >/dev/null 2>&1 || fail ${e.engineNotReady} "docker is not installed"
  if ! err=$(docker info 2>&1 >/dev/null); then
    fail ${e.engineNotReady} "$err"
  fi
}

# The container's state (running, exited, ...), or failure when there is no such container.
state_of() {
  docker container inspect --format '{{.State.Status}}' "$1" 2>/dev/null
}

is_up() {
  [ "$1" = running ] || [ "$1" = restarting ] || [ "$1" = paused ]
}

${LOADED_IMAGE_FN}
${PRESENT_IMAGE_FN}
do_start() {
  tar='' name='' make_dir=''
  while [ $# -gt 0 ]; do
    case $1 in
      --tar | --name | --mkdir)
        [ $# -ge 2 ] || fail ${e.usage} "start: $1 needs a value"
        case $1 in
          --tar) tar=$2 ;;
          --name) name=$2 ;;
          *) make_dir=$2 ;;
        esac
        shift 2
        ;;
      --)
        shift
        break
        ;;
      *) fail ${e.usage} "start: unexpected argument '$1'" ;;
    esac
  done
  { [ -n "$tar" ] && [ -n "$name" ]; } || fail ${e.usage} "start: --tar and --name are required"
  engine_ready
  [ -f "$tar" ] || fail ${e.noTar} "$tar: no such file"

  # An image the engine already has (the archive's config digest is its ID) is not loaded again:
  # docker load re-hashes every layer, minutes for a large image under emulation.
  image=$(present_image "$tar")
  if [ -n "$image" ]; then
    say present "$image"
  else
    # Load first: a tar that does not load leaves the running container alone.
    out=$(docker load -i "$tar" 2>&1) || fail ${e.loadFailed} "$out"
    image=$(loaded_image "$out")
    [ -n "$image" ] || fail ${e.noImageName} "$out"
  fi
  say loaded "$image"
  if [ -n "$make_dir" ]; then
    err=$(mkdir -p -- "$make_dir" 2>&1) || fail ${e.engineFailed} "$err"
  fi

  backup=$name$PREVIOUS_SUFFIX
  # A start cut short (SSH dropped, VM reset) can have left the previous container set aside:
  # with nothing under the name it is the current one again, else it is stale.
  if state_of "$backup" >/dev/null; then
    if state_of "$name" >/dev/null; then
      err=$(docker rm -f "$backup" 2>&1 >/dev/null) || fail ${e.setAsideFailed} "$err"
    else
      err=$(docker rename "$backup" "$name" 2>&1 >/dev/null) || fail ${e.setAsideFailed} "$err"
    fi
  fi

  # The old container is stopped (it may hold the same ports) and renamed, not removed, so it
  # can come back unchanged if the new one does not start.
  old_state=''
  if old_state=$(state_of "$name"); then
    say previous "$old_state $(docker container inspect --format '{{.Config.Image}}' "$name" 2>/dev/null)"
    err=$(docker stop "$name" 2>&1 >/dev/null) || fail ${e.setAsideFailed} "$err"
    if ! err=$(docker rename "$name" "$backup" 2>&1 >/dev/null); then
      if is_up "$old_state"; then docker start "$name" >/dev/null 2>&1; fi
      fail ${e.setAsideFailed} "$err"
    fi
  else
    old_state=''
  fi

  if ! out=$(docker run -d --name "$name" "$@" "$image" 2>&1); then
    printf '%s\\n' "$out" >&2
    # An engine leaves the container created when its start fails: free the name.
    docker rm -f "$name" >/dev/null 2>&1
    [ -n "$old_state" ] || exit ${e.runFailed}
    if docker rename "$backup" "$name" >/dev/null 2>&1; then
      if ! is_up "$old_state" || docker start "$name" >/dev/null 2>&1; then
        say restored "$old_state"
        exit ${e.runFailedRestored}
      fi
    fi
    exit ${e.runFailed}
  fi
  say started "$(printf '%s\\n' "$out" | tail -n 1)"

  if [ -n "$old_state" ]; then
    err=$(docker rm "$backup" 2>&1 >/dev/null) || say warning "could not remove the previous container $backup: $err"
  fi
  # The replaced image is dangling now that nothing uses it.
  err=$(docker image prune -f 2>&1 >/dev/null) || say warning "could not prune dangling images: $err"
  return 0
}

do_stop() {
  [ $# -eq 1 ] || fail ${e.usage} "stop: one container name expected"
  engine_ready
  state=$(state_of "$1") || fail ${e.noContainer}
  say was "$state"
  err=$(docker stop "$1" 2>&1 >/dev/null) || fail ${e.engineFailed} "$err"
}

do_check() {
  [ $# -eq 1 ] || fail ${e.usage} "check: one container name expected"
  engine_ready
  state=$(state_of "$1") || fail ${e.noContainer}
  say state "$state"
}

do_status() {
  [ $# -eq 0 ] || fail ${e.usage} "status: no arguments expected"
  engine_ready
  say now "$(date -u +%s)"
  ids=$(docker ps -a -q --no-trunc 2>&1) || fail ${e.engineFailed} "$ids"
  for id in $ids; do
    case $id in *[!0-9a-f]*) continue ;; esac
    # The ID from the listing: docker's template sees .Id, podman's .ID, neither both.
    # A container removed since the listing is simply not shown.
    docker container inspect --format 'container {"id":"'"$id"'",'"\${STATUS_FORMAT#?}" "$id" 2>/dev/null || :
  done
}

action=\${1:-}
[ $# -gt 0 ] && shift
case $action in
  start) do_start "$@" ;;
  stop) do_stop "$@" ;;
  check) do_check "$@" ;;
  status) do_status "$@" ;;
  *) fail ${e.usage} "unknown action '$action'" ;;
esac
`;
