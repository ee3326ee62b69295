"""The "One GPU box" commands of docs/deploying.md (the README links there), run as written on this machine: a
real `ray start --head` (with Ray's token authentication), `serve deploy`, `serve status`, `/healthz`, a cut-out
with the API key, and `ray stop`.

Three changes to what a reader types, and only these: `make install` and the weights download are skipped (the
test runs inside the installed environment, with no network), and `configs/gpu.yaml` becomes `configs/local.yaml`
(no GPU here); the tiny model with random weights comes from BGREMOVE_MODEL / BGREMOVE_CHECKPOINT, which
`ray start` passes on to the replicas like any other variable of its shell.

Isolation: `ray stop` ends every Ray process it can see, so the whole flow runs in a private PID namespace (it sees
only its own processes; the pytest session's Ray and other people's clusters are not touched) and a private
network namespace (the README's fixed ports 6379, 8265 and 8000 are free there, and nothing outside can reach the
cluster). HOME and RAY_TMPDIR are private too: the token lands in a temporary ~/.ray/auth_token, and
`ray_current_cluster` (RAY_TMPDIR/ray/, where `ray start` writes the address a plain `ray.init()` joins) is not
the machine's /tmp/ray. When the namespace's first process exits, the kernel ends whatever is left in it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from http import HTTPStatus
from pathlib import Path

import pytest
from PIL import Image

from images import jpeg
from serve_config import ROOT

# About 2 minutes on an idle 2-core machine; up to 14 on one shared with several test suites (replica start-up).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# --kill-child: if the test kills unshare (its timeout), the namespace's first process dies and the kernel ends the rest.
NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net"]
DEPLOYING = ROOT / "docs" / "deploying.md"  # where the README's "One GPU box" link leads
PHOTO_SIZE = (320, 240)  # the README's click [100, 200] is inside it


def readme_commands() -> list[str]:
    """The shell lines of the "One GPU box" block, continuation lines joined."""
    section = DEPLOYING.read_text().split("\n## One GPU box\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def namespaces_missing() -> str | None:
    for tool in ("unshare", "ip", "ss"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed (util-linux / iproute2)"
    probe = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create PID and network namespaces here (root needed): {probe.stderr.strip()}"
    return None


def script(commands: list[str]) -> str:
    """The README's lines in order, each stopping the script on failure; `serve status` is repeated until the
    application is RUNNING (at most 120 tries), as a reader would rerun it. Afterwards, what the test checks is written to files."""
    lines = ["set -eu", "ip link set lo up"]
    for command in commands:
        if command.startswith("make install") or "weights download" in command:
            continue
        command = command.replace("configs/gpu.yaml", "configs/local.yaml")
        bare = re.sub(r"\s+#\s.*$", "", command)  # without its trailing comment, to wrap it
        if bare.endswith("serve status"):
            lines += ["for _ in $(seq 120); do",
                      f"  {bare} > status.txt 2>&1 || true",
                      "  grep -q 'status: RUNNING' status.txt && break; sleep 3",
                      "done"]
        elif bare.endswith("/healthz"):
            lines.append(f"{bare} > healthz.json")
        elif "ray stop" in bare:
            lines += checks()
            lines.append(command)
            lines.append("ps -e -o comm= > after_stop.txt")
        else:
            lines.append(command)
    return "\n".join(lines) + "\n"


def checks() -> list[str]:
    """Run while the cluster is up: listening sockets, the API without its key, Ray's CLI without the token."""
    no_token = "env -u RAY_AUTH_MODE -u RAY_AUTH_TOKEN -u RAY_AUTH_TOKEN_PATH HOME=$PWD/stranger"
    return [
        "ss -H -ltn > listening.txt",
        "cat \"$RAY_TMPDIR/ray/ray_current_cluster\" > cluster_address.txt",
        "stat -c %a ~/.ray/auth_token > token_mode.txt",
        "curl -s -o /dev/null -w '%{http_code}' -F image=@photo.jpg -F 'points=[[100, 200]]' "
        "http://127.0.0.1:8000/background-removal/remove > no_key_status.txt",
        f"rc=0; {no_token} .venv/bin/serve status > unauthenticated.txt 2>&1 || rc=$?; echo $rc > unauthenticated.rc",
        f"rc=0; {no_token} RAY_AUTH_MODE=token RAY_AUTH_TOKEN=0123456789abcdef .venv/bin/serve status "
        "> wrong_token.txt 2>&1 || rc=$?; echo $rc > wrong_token.rc",
    ]


@pytest.fixture
def workdir():
    """A short path (Ray's socket paths must stay under 108 bytes) holding what the README's relative paths name."""
    path = Path(tempfile.mkdtemp(prefix="gpubox-", dir="/tmp"))
    venv = ROOT / ".venv" if (ROOT / ".venv/bin/ray").exists() else Path(sys.executable).parent.parent
    (path / ".venv").symlink_to(venv)
    (path / "configs").symlink_to(ROOT / "configs")
    (path / "home").mkdir()
    (path / "stranger").mkdir()
    (path / "photo.jpg").write_bytes(jpeg(*PHOTO_SIZE, seed=3))
    yield path
    shutil.rmtree(path, ignore_errors=True)


NAMESPACES_MISSING = namespaces_missing()


@pytest.mark.skipif(NAMESPACES_MISSING is not None, reason=str(NAMESPACES_MISSING))
def test_readme_one_gpu_box_commands_work_with_token_authentication(workdir):
    commands = readme_commands()
    for step in ("ray start --head", "serve deploy configs/gpu.yaml", "serve status", "/healthz",
                 "/background-removal/remove", "ray stop"):
        assert any(step in command for command in commands), f"the README's block lost `{step}`"
    (workdir / "flow.sh").write_text(script(commands))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "BGREMOVE_"))}
    env.update(HOME=str(workdir / "home"), RAY_TMPDIR=str(workdir / "raytmp"), RAY_USAGE_STATS_ENABLED="0",
               BGREMOVE_MODEL="tiny", BGREMOVE_CHECKPOINT="random", BGREMOVE_DEVICE="cpu",
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}")
    result = subprocess.run([*NAMESPACE, "bash", "flow.sh"], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=1700)
    log = "\n".join(line for line in (result.stdout + result.stderr).splitlines() if "--:--" not in line)[-6000:]
    assert result.returncode == 0, log

    def read(name: str) -> str:
        return (workdir / name).read_text()

    status = read("status.txt")
    assert re.search(r"background_remover:\s+status: RUNNING", status), status
    for deployment in ("Ingress", "Segmenter", "Postprocess", "ImageStore"):
        assert re.search(rf"{deployment}:\s+status: HEALTHY", status), status
    assert '"status":"ok"' in read("healthz.json").replace(" ", "")

    body = (workdir / "cutout.png").read_bytes()
    assert body.startswith(b"\x89PNG"), body[:500]
    cutout = Image.open(io.BytesIO(body))
    assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", PHOTO_SIZE)
    assert read("no_key_status.txt") == "401"  # the key exported before `ray start` reached the replicas

    dashboard = [line.split()[3] for line in read("listening.txt").splitlines() if line.split()[3].endswith(":8265")]
    assert dashboard and all(address.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for address in dashboard)
    assert read("token_mode.txt").strip() == "600"

    # What the docs say the dashboard answers without the token (401) and with a wrong one (403). `serve status`
    # prints the answer's body, which starts with the status's reason phrase ("Unauthorized: Missing ...").
    claim = re.search(r"`serve status` without the token \((\d{3})\) or with a wrong one\s+\((\d{3})\)",
                      DEPLOYING.read_text())
    assert claim, "docs/deploying.md no longer says what `serve status` without the token answers"
    for name, status, reason in (("unauthenticated", claim[1], "Missing authentication token"),
                                 ("wrong_token", claim[2], "Invalid authentication token")):
        output = read(f"{name}.txt")
        assert read(f"{name}.rc").strip() != "0", output[-2000:]
        assert f"{HTTPStatus(int(status)).phrase}: {reason}" in output, (status, output[-2000:])

    # `ray start` wrote the address a plain ray.init() joins into the private temp dir, not the machine's /tmp/ray.
    assert read("cluster_address.txt").strip() == "127.0.0.1:6379"
    left = set(read("after_stop.txt").split())
    assert not left & {"raylet", "gcs_server"}, left
    assert not (workdir / "raytmp/ray/ray_current_cluster").exists()  # `ray stop` removed it
