#!/usr/bin/env bash
# The image and the cluster for real (`make test-containers`): builds docker/Dockerfile on a bare Debian base,
# runs it as one container, then as a two-node Ray cluster from docker/compose.yaml (+ compose.cpu.yaml: no GPU
# here) with Ray's token authentication, kills the worker under a stream of requests, starts it again, and
# prints a summary (image size, build time, time to healthy, requests sent / answered / lost, recovery time).
#
# What it needs, it installs: Docker and Compose from Debian's packages (docker.io, docker-compose), debootstrap
# for the base image. It starts dockerd only when none runs, and stops only the one it started. Kept between
# runs: the base image (background-remover-base:bookworm), the build cache, and the image background-remover:ci
# (to inspect it). CONTAINER_CHECK_COLD=1 empties the build cache first: the build time of a cold cache.
# Every wait is bounded and says what it waited for; what the check started is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=background-remover:ci
BASE_IMAGE=${BASE_IMAGE:-background-remover-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROJECT=bgremove-ci                 # the compose project: `down` touches nothing else
SINGLE=bgremove-ci-single           # the one-container check's container
# The tiny model with seeded random weights: an image built with CHECKPOINT=random has no checkpoint.
MODEL_ENV=(BGREMOVE_MODEL=tiny BGREMOVE_CHECKPOINT=random)
STREAMS=2                           # concurrent request streams around the node kill
STREAM_MAX_REQUESTS=300             # per stream
STREAM_MAX_S=480                    # per stream
OUTAGE_S=15                         # how long the worker stays dead before it is started again

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
WORK=$(mktemp -d /tmp/bgremove-container-check.XXXXXX)
STARTED_DOCKERD=""
STREAM_PIDS=()
COMPOSE=()

exec 3>&1  # the log's own descriptor: still the terminal inside a wait_for probe, whose output is discarded
log() { printf '[container-check %s] %s\n' "$(date -u +%T)" "$*" >&3; }
fail() { log "FAILED: $*"; exit 1; }
PASSED=0
passed() { PASSED=$((PASSED + 1)); log "ok: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 2 s until it succeeds; fails, saying WHAT, after SECONDS.
wait_for() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1)) tries=0
    shift 2
    while ! "$@" >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "gave up after ${limit} s (${tries} tries) waiting for: ${what}"
            return 1
        fi
        sleep 2
    done
}

cleanup() {
    local status=$?
    set +e
    for pid in "${STREAM_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    if [ -n "${DOCKER:-}" ] && timeout 20 "$DOCKER" info >/dev/null 2>&1; then
        if [ "$status" != 0 ]; then
            for name in "$SINGLE" ${HEAD_ID:-} ${WORKER_ID:-}; do
                timeout 20 "$DOCKER" inspect "$name" >/dev/null 2>&1 || continue
                log "for the failure above, the last 60 log lines of $("$DOCKER" inspect -f '{{.Name}}' "$name"):"
                timeout 60 "$DOCKER" logs --tail 60 "$name" 2>&1 | sed 's/^/    /'
            done
        fi
        timeout 60 "$DOCKER" rm -f "$SINGLE" >/dev/null 2>&1
        [ -e "$WORK/compose.ci.yaml" ] && RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-unused} \
            timeout 180 "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        log "stopping the dockerd this check started (pid $STARTED_DOCKERD)"
        $SUDO kill "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$WORK"
    [ "$status" = 0 ] || log "container check FAILED (exit $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- Docker ---------------------------------------------------------------------------------------------------

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing from Debian's packages: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables
fi

# BuildKit builds the image (build secrets, docker/Dockerfile.dockerignore). A newer `docker` without its buildx
# plugin cannot; Debian's docker.io client has BuildKit built in.
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1; then
    DOCKER=/usr/bin/docker
fi
export DOCKER_BUILDKIT=1

if ! timeout 20 "$DOCKER" info >/dev/null 2>&1; then
    log "no Docker daemon answers: starting dockerd (log: $WORK/dockerd.log)"
    $SUDO dockerd >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    wait_for 90 "dockerd to answer" timeout 20 "$DOCKER" info || { tail -20 "$WORK/dockerd.log"; exit 1; }
fi
log "docker: $("$DOCKER" version --format 'client {{.Client.Version}}, server {{.Server.Version}}')"

# Compose v2 where it is installed, else Debian's docker-compose 1.29.
if "$DOCKER" compose version >/dev/null 2>&1; then
    compose_bin=("$DOCKER" compose)
else
    compose_bin=(docker-compose)
fi
log "compose: ${compose_bin[*]} $("${compose_bin[@]}" version --short 2>/dev/null || true)"
COMPOSE=("${compose_bin[@]}" -p "$PROJECT" -f docker/compose.yaml -f docker/compose.cpu.yaml -f "$WORK/compose.ci.yaml")

# -- the base image and the project's image -------------------------------------------------------------------

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "making the base image $BASE_IMAGE: debootstrap bookworm from $MIRROR (a few minutes)"
    started=$(now)
    $SUDO timeout 1200 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    $SUDO tar -C "$WORK/rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
    $SUDO rm -rf "$WORK/rootfs"
    log "base image made in $(since "$started") s"
else
    log "reusing the base image $BASE_IMAGE"
fi

if [ "${CONTAINER_CHECK_COLD:-0}" = 1 ]; then
    log "CONTAINER_CHECK_COLD=1: removing $IMAGE and the build cache"
    "$DOCKER" image rm -f "$IMAGE" >/dev/null 2>&1 || true
    "$DOCKER" builder prune -af >/dev/null
fi

# pip inside the build must trust what pip trusts here (a TLS-inspecting proxy's CA): pip's own `cert` setting.
PIP=$(command -v .venv/bin/pip || command -v pip3 || true)
CA_CERTS=${PIP_CERT:-$([ -n "$PIP" ] && "$PIP" config list 2>/dev/null | sed -n "s/^[^=]*\.cert='\(.*\)'$/\1/p" | head -1)}
CA_CERTS=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
secret=()
[ -s "$CA_CERTS" ] && secret=(--secret "id=ca_certs,src=$CA_CERTS")

log "building $IMAGE (FROM $BASE_IMAGE, CHECKPOINT=random; log: $WORK/build.log)"
started=$(now)
if ! timeout 3000 "$DOCKER" build --progress=plain -f docker/Dockerfile -t "$IMAGE" "${secret[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg CHECKPOINT=random . >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    fail "docker build"
fi
BUILD_S=$(since "$started")
CACHED_STEPS=$(grep -c '^#[0-9]* CACHED' "$WORK/build.log" || true)
IMAGE_BYTES=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
IMAGE_GB=$(awk -v b="$IMAGE_BYTES" 'BEGIN { printf "%.2f", b / 1e9 }')
log "built $IMAGE in $BUILD_S s ($CACHED_STEPS steps from the cache), $IMAGE_GB GB"

# -- helpers that run inside the image (it has Python and Pillow; the host needs only bash and curl) -----------

# photo CONTAINER FILE: a 640x480 JPEG with a disc on a gradient, made by Pillow in the container.
photo() {
    "$DOCKER" exec "$1" python3 -c '
import io, sys
from PIL import Image, ImageDraw
im = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
ImageDraw.Draw(im).ellipse((220, 140, 420, 340), fill=(200, 40, 40))
out = io.BytesIO(); im.save(out, "JPEG", quality=90); sys.stdout.buffer.write(out.getvalue())' >"$2"
}

# png_shape CONTAINER FILE: prints "MODE WIDTHxHEIGHT" of a PNG, read by Pillow in the container.
png_shape() {
    "$DOCKER" exec -i "$1" python3 -c '
import sys
from PIL import Image
im = Image.open(sys.stdin.buffer); assert im.format == "PNG", im.format
print(f"{im.mode} {im.width}x{im.height}")' <"$2"
}

# cutout URL PHOTO OUT: the seed's curl form (with the API key, where the cluster needs one); prints the status.
AUTH=()
cutout() {
    curl -s --max-time 120 -o "$3" -w '%{http_code}' "${AUTH[@]}" -F "image=@$2" -F 'points=[[320, 240], [300, 260]]' \
        "$1/background-removal/remove" || true
}

healthz_device() { curl -s --max-time 10 "$1/healthz" | sed -n 's/.*"device": *"\([a-z]*\)".*/\1/p'; }
healthz_ok() { [ "$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$1/healthz")" = 200 ]; }
health_status() { "$DOCKER" inspect -f '{{.State.Health.Status}}' "$1"; }
is_healthy() { [ "$(health_status "$1")" = healthy ]; }

url_of() { echo "http://127.0.0.1:$("$DOCKER" port "$1" 8000/tcp | head -1 | sed 's/.*://')"; }

# revive CONTAINER: a container that exited while starting is started again, REVIVALS_MAX times in all. Ray gives a
# new node 30 s to register with its GCS, which a machine busy with other work sometimes misses.
REVIVALS=0
REVIVALS_MAX=5
revive() {
    # Running, or being restarted by its restart policy (compose's `restart: on-failure`).
    [ "$("$DOCKER" inspect -f '{{or .State.Running .State.Restarting}}' "$1")" = true ] && return 0
    local last name
    last=$("$DOCKER" logs --tail 3 "$1" 2>&1 | tr '\n' ' ' | cut -c1-300)
    name=$("$DOCKER" inspect -f '{{.Name}}' "$1")
    REVIVALS=$((REVIVALS + 1))
    [ "$REVIVALS" -le "$REVIVALS_MAX" ] || fail "$name exited again while starting, after $REVIVALS_MAX restarts: $last"
    log "$name exited while starting (${last}); starting it again ($REVIVALS of at most $REVIVALS_MAX restarts)"
    "$DOCKER" start "$1" >/dev/null
}

# serving URL_VAR CONTAINER...: each CONTAINER running (revived if it exited) and /healthz at the first one's
# port answering 200; sets URL_VAR to that address (a restarted container may get another port).
serving() {
    local var=$1 name
    shift
    for name in "$@"; do revive "$name" || return 1; done
    printf -v "$var" '%s' "$(url_of "$1")"
    healthz_ok "${!var}"
}

# pid1_uid CONTAINER: the user the container's main process runs as.
pid1_uid() { "$DOCKER" exec "$1" stat -c %u /proc/1; }

# has_process CONTAINER PATTERN: a process whose command line (Ray sets it to the replica's name) contains PATTERN.
has_process() {
    "$DOCKER" exec "$1" python3 -c '
import os, pathlib, sys
def cmdline(proc):
    try:
        return b"" if proc.name == str(os.getpid()) else (proc / "cmdline").read_bytes()  # not this very check
    except OSError:  # ended meanwhile
        return b""
sys.exit(0 if any(sys.argv[1].encode() in cmdline(p) for p in pathlib.Path("/proc").glob("[0-9]*")) else 1)' "$2"
}

# -- one container --------------------------------------------------------------------------------------------

log "one container: docker run $IMAGE (bgremove serve), tiny model, random weights"
"$DOCKER" rm -f "$SINGLE" >/dev/null 2>&1 || true
started=$(now)
"$DOCKER" run -d --name "$SINGLE" --shm-size 2g -p 127.0.0.1::8000 \
    -e "${MODEL_ENV[0]}" -e "${MODEL_ENV[1]}" "$IMAGE" >/dev/null
URL=""
wait_for 900 "/healthz to answer 200 (bgremove serve starting Ray and the graph)" serving URL "$SINGLE" \
    || fail "the container did not serve"
SINGLE_HEALTHZ_S=$(since "$started")
device=$(healthz_device "$URL")
[ "$device" = cpu ] || fail "/healthz says device '$device', expected cpu"
passed "/healthz 200 after $SINGLE_HEALTHZ_S s, device: cpu"

photo "$SINGLE" "$WORK/photo.jpg"
status=$(cutout "$URL" "$WORK/photo.jpg" "$WORK/cutout.png")
[ "$status" = 200 ] || fail "the curl form answered $status: $(head -c 300 "$WORK/cutout.png")"
shape=$(png_shape "$SINGLE" "$WORK/cutout.png")
[ "$shape" = "RGBA 640x480" ] || fail "the cut-out is '$shape', expected an RGBA PNG of the photo's size (640x480)"
passed "curl form: 200, $shape PNG"

uid=$(pid1_uid "$SINGLE")
[ "$uid" != 0 ] || fail "the service runs as root"
passed "the service runs as uid $uid"

# The image's own HEALTHCHECK (first probe 30 s after the start, then every 30 s).
wait_for 300 "Docker's HEALTHCHECK to report healthy (now: $(health_status "$SINGLE"))" is_healthy "$SINGLE" \
    || fail "HEALTHCHECK is $(health_status "$SINGLE")"
SINGLE_HEALTHY_S=$(since "$started")
passed "HEALTHCHECK healthy after $SINGLE_HEALTHY_S s"
"$DOCKER" rm -f "$SINGLE" >/dev/null

# -- a two-node Ray cluster from docker/compose.yaml ----------------------------------------------------------

# Only what CI changes: the image tag, and the tiny model with random weights. configs/cluster.yaml as written.
cat >"$WORK/compose.ci.yaml" <<EOF
services:
  head:
    image: $IMAGE
    environment: {${MODEL_ENV[0]/=/: }, ${MODEL_ENV[1]/=/: }}
  worker:
    image: $IMAGE
    environment: {${MODEL_ENV[0]/=/: }, ${MODEL_ENV[1]/=/: }}
EOF
# compose.yaml's head publishes 8000 (the API, behind API keys) and 127.0.0.1:8265 (the dashboard) on this host.
port_free() { ! (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8000 8265; do
    wait_for 120 "host port $port to be free (docker/compose.yaml publishes it)" port_free "$port" \
        || fail "port $port of this host is taken: $(ss -ltnp 2>/dev/null | grep ":$port " | head -2)"
done
BGREMOVE_API_KEYS=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export BGREMOVE_API_KEYS
AUTH=(-H "Authorization: Bearer $BGREMOVE_API_KEYS")

# Compose refuses to start without the token.
if RAY_AUTH_TOKEN="" "${COMPOSE[@]}" config >"$WORK/no-token.txt" 2>&1 || ! grep -q RAY_AUTH_TOKEN "$WORK/no-token.txt"; then
    cat "$WORK/no-token.txt"
    fail "compose accepted a configuration without RAY_AUTH_TOKEN"
fi
passed "compose refuses to start without RAY_AUTH_TOKEN: $(grep -o 'set RAY_AUTH_TOKEN[^}"]*' "$WORK/no-token.txt" | head -1)"
RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export RAY_AUTH_TOKEN

timeout 180 "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of an interrupted run
log "cluster: compose up (head + worker with one logical GPU), Ray token authentication on"
started=$(now)
timeout 300 "${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up"; }
HEAD_ID=$(timeout 60 "${COMPOSE[@]}" ps -q head)
WORKER_ID=$(timeout 60 "${COMPOSE[@]}" ps -q worker)
URL=""
wait_for 900 "/healthz to answer 200 (head deploys configs/cluster.yaml, Segmenter on the worker)" \
    serving URL "$HEAD_ID" "$WORKER_ID" || fail "the cluster did not serve"
CLUSTER_HEALTHZ_S=$(since "$started")
device=$(healthz_device "$URL")
[ "$device" = cpu ] || fail "the cluster's /healthz says device '$device', expected cpu"
passed "cluster /healthz 200 after $CLUSTER_HEALTHZ_S s"

"$DOCKER" exec "$HEAD_ID" serve status >"$WORK/serve-status.txt" 2>&1 || { cat "$WORK/serve-status.txt"; fail "serve status"; }
sed 's/^/    /' "$WORK/serve-status.txt"
grep -A2 'Segmenter:' "$WORK/serve-status.txt" | grep -q HEALTHY || fail "serve status: the Segmenter is not HEALTHY"
has_process "$WORKER_ID" "ServeReplica:background_remover:Segmenter" || fail "no Segmenter replica on the worker"
! has_process "$HEAD_ID" "ServeReplica:background_remover:Segmenter" || fail "a Segmenter replica on the head"
passed "serve status: Segmenter HEALTHY; its replica runs on the worker's node, none on the head"

# Without the token, Ray refuses: a client in the head container with the token removed from its environment.
if "$DOCKER" exec -e RAY_AUTH_TOKEN= "$HEAD_ID" serve status >"$WORK/no-token-status.txt" 2>&1; then
    cat "$WORK/no-token-status.txt"
    fail "serve status without the token was answered"
fi
grep -qi 'authentication\|token' "$WORK/no-token-status.txt" || { cat "$WORK/no-token-status.txt"; fail "serve status without the token failed for another reason"; }
passed "serve status without the token: refused ($(grep -oi '[a-z]*authenticationerror[^.]*' "$WORK/no-token-status.txt" | head -1))"

photo "$HEAD_ID" "$WORK/photo.jpg"
status=$(cutout "$URL" "$WORK/photo.jpg" "$WORK/cutout.png")
[ "$status" = 200 ] || fail "the cluster answered the curl form with $status: $(head -c 300 "$WORK/cutout.png")"
shape=$(png_shape "$HEAD_ID" "$WORK/cutout.png")
[ "$shape" = "RGBA 640x480" ] || fail "the cluster's cut-out is '$shape'"
passed "cluster curl form: 200, $shape PNG"

# -- the worker lost for real, under a stream of requests -----------------------------------------------------

# stream N FILE: up to STREAM_MAX_REQUESTS requests one after the other for at most STREAM_MAX_S; one line per
# request: "<start> <end> <status> <retry-after>" (status 000: no HTTP answer).
stream() {
    local deadline=$((SECONDS + STREAM_MAX_S)) i=0 t0 code retry
    while [ "$i" -lt "$STREAM_MAX_REQUESTS" ] && [ "$SECONDS" -lt "$deadline" ] && [ ! -e "$WORK/stop" ]; do
        i=$((i + 1))
        rm -f "$WORK/headers.$1" "$WORK/body.$1"
        t0=$(now)
        code=$(curl -s --max-time 120 -D "$WORK/headers.$1" -o "$WORK/body.$1" -w '%{http_code}' "${AUTH[@]}" \
               -F "image=@$WORK/photo.jpg" -F 'points=[[320, 240]]' "$URL/background-removal/remove" || true)
        retry=$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$WORK/headers.$1" 2>/dev/null | head -1)
        echo "$t0 $(now) ${code:-000} ${retry:--}" >>"$2"
        [ "$code" = 200 ] || echo "${code:-000}: $(head -c 300 "$WORK/body.$1" 2>/dev/null)" >>"$WORK/refusals.txt"
    done
}

log "node kill: $STREAMS request streams, then docker kill the worker, ${OUTAGE_S} s later docker start it"
: >"$WORK/requests.txt"
for n in $(seq 1 "$STREAMS"); do
    stream "$n" "$WORK/requests.$n" &
    STREAM_PIDS+=($!)
done
sleep 10
answered_before=$(cat "$WORK"/requests.* 2>/dev/null | awk '$3 == 200' | wc -l)
[ "$answered_before" -gt 0 ] || fail "no request answered 200 in the 10 s before the kill"
KILLED_AT=$(now)
"$DOCKER" kill "$WORKER_ID" >/dev/null
log "worker killed ($answered_before cut-outs answered before)"
sleep "$OUTAGE_S"
RESTARTED_AT=$(now)
"$DOCKER" start "$WORKER_ID" >/dev/null
log "worker started again"

# Recovered: a request sent after the restart answered 200. Then a few more, and the streams stop.
recovered() {
    revive "$WORKER_ID" || return 1
    cat "$WORK"/requests.* | awk -v t="$RESTARTED_AT" '$1 > t && $3 == 200 { n++ } END { exit !(n >= 1) }'
}
wait_for 600 "a cut-out answered after the worker's restart" recovered || fail "the service did not recover"
RECOVERED_AT=$(cat "$WORK"/requests.* | awk -v t="$RESTARTED_AT" '$1 > t && $3 == 200 { print $2 }' | sort -n | head -1)
sleep 10
touch "$WORK/stop"
for pid in "${STREAM_PIDS[@]}"; do
    wait_for 150 "request stream $pid to finish its last request" bash -c "! kill -0 $pid" || kill "$pid" 2>/dev/null || true
done
STREAM_PIDS=()
cat "$WORK"/requests.* | sort -n >"$WORK/requests.txt"

SENT=$(wc -l <"$WORK/requests.txt")
OK=$(awk '$3 == 200' "$WORK/requests.txt" | wc -l)
RETRY=$(awk '$3 == 503 && $4 != "-"' "$WORK/requests.txt" | wc -l)
LOST=$((SENT - OK - RETRY))
AROUND_KILL=$(awk -v k="$KILLED_AT" -v r="$RECOVERED_AT" '$2 > k && $1 < r' "$WORK/requests.txt" | wc -l)
RECOVERY_S=$(awk -v k="$KILLED_AT" -v r="$RECOVERED_AT" 'BEGIN { printf "%.1f", r - k }')
FROM_RESTART_S=$(awk -v s="$RESTARTED_AT" -v r="$RECOVERED_AT" 'BEGIN { printf "%.1f", r - s }')
log "requests: $SENT sent, $OK answered 200, $RETRY answered 503 with Retry-After, $LOST lost (other answers:" \
    "$(awk '$3 != 200 && !($3 == 503 && $4 != "-") { print $3 }' "$WORK/requests.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ';')" \
    "); $AROUND_KILL were in flight or sent between the kill and the recovery"
[ -s "$WORK/refusals.txt" ] && log "the answers other than 200:" && sort "$WORK/refusals.txt" | uniq -c | sed 's/^/    /' >&3
[ "$LOST" = 0 ] || fail "$LOST requests ended neither as 200 nor as 503 with Retry-After"
[ "$AROUND_KILL" -gt 0 ] || fail "no request was in flight during the outage: the kill proved nothing"
passed "node kill: every request answered 200 or 503 with Retry-After, none lost"
has_process "$WORKER_ID" "ServeReplica:background_remover:Segmenter" || fail "the Segmenter did not come back on the worker"
passed "service restored $RECOVERY_S s after the kill ($FROM_RESTART_S s after the restart); Segmenter back on the worker"

timeout 180 "${COMPOSE[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; fail "compose down"; }
left=$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "compose down left containers: $left"
passed "compose down: nothing of the cluster left running"

SUMMARY=$(printf '{"image": "%s", "image_gb": %s, "build_s": %s, "build_cached_steps": %s, "single_healthz_s": %s, "single_healthcheck_healthy_s": %s, "cluster_healthz_s": %s, "requests_sent": %s, "answered_200": %s, "answered_503_retry_after": %s, "lost": %s, "in_outage": %s, "recovery_s": %s, "recovery_after_restart_s": %s, "restarts_while_starting": %s}' \
    "$IMAGE" "$IMAGE_GB" "$BUILD_S" "$CACHED_STEPS" "$SINGLE_HEALTHZ_S" "$SINGLE_HEALTHY_S" "$CLUSTER_HEALTHZ_S" \
    "$SENT" "$OK" "$RETRY" "$LOST" "$AROUND_KILL" "$RECOVERY_S" "$FROM_RESTART_S" "$REVIVALS")
mkdir -p test-artifacts
echo "$SUMMARY" >test-artifacts/container_check.json
cat <<EOF

container check summary (test-artifacts/container_check.json)
  image $IMAGE: $IMAGE_GB GB, built in $BUILD_S s ($CACHED_STEPS steps from the build cache)
  one container: /healthz 200 after $SINGLE_HEALTHZ_S s, HEALTHCHECK healthy after $SINGLE_HEALTHY_S s
  cluster (head + worker): /healthz 200 after $CLUSTER_HEALTHZ_S s
  node kill: $SENT requests sent, $((OK + RETRY)) answered ($OK x 200, $RETRY x 503 + Retry-After), $LOST lost
  recovery: $RECOVERY_S s from the kill to the first cut-out ($FROM_RESTART_S s after the restart)
  containers restarted because Ray missed its 30 s start-up window: $REVIVALS
$SUMMARY
container-check: $PASSED passed, 0 failed
EOF
