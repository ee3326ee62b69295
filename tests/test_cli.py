"""The bgremove command line: cut against a running service, refusals, a service that is down, weights."""

import os
import pytest

from serve_app.cli import main

from conftest import free_port
from images import crop_box, decode, jpeg, real_mask


@pytest.mark.e2e
def test_cut_writes_the_cutout(app_url, tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(320, 240, seed=30))
    out = tmp_path / "cut.png"
    code = main(["cut", str(photo_path), "--point", "160,120", "--exclude", "10,10", "-o", str(out), "--url", app_url])
    assert code == 0, capsys.readouterr().err
    assert decode(out.read_bytes()).size == (320, 240)


@pytest.mark.e2e
def test_cut_reports_a_refusal(app_url, tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(320, 240, seed=30))
    code = main(["cut", str(photo_path), "--point", "5000,1", "-o", str(tmp_path / "x.png"), "--url", app_url])
    assert code == 1
    assert "422" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_cut_with_the_service_down(tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(32, 32))
    code = main(["cut", str(photo_path), "--point", "1,1", "-o", str(tmp_path / "x.png"),
                 "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"])
    assert code == 3 and "cannot reach" in capsys.readouterr().err


def test_cut_with_a_missing_file(tmp_path, capsys):
    assert main(["cut", str(tmp_path / "nope.jpg"), "--point", "1,1", "-o", "x.png"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_weights_list(tmp_path, capsys):
    assert main(["weights", "list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "base_plus" in out and "missing" in out


@pytest.mark.e2e
@pytest.mark.parametrize("args, suffix, expected", [
    (["--mask-only"], ".png", ("PNG", "L", (320, 240))),
    (["--background", "white"], ".jpg", ("JPEG", "RGB", (320, 240))),
    (["--format", "webp", "--quality", "80"], ".out", ("WEBP", "RGBA", (320, 240))),
])
def test_cut_output_options(app_url, tmp_path, capsys, args, suffix, expected):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(320, 240, seed=31))
    out = tmp_path / f"cut{suffix}"
    code = main(["cut", str(photo_path), "--point", "160,120", *args, "-o", str(out), "--url", app_url])
    assert code == 0, capsys.readouterr().err
    image = decode(out.read_bytes())
    assert (image.format, image.mode, image.size) == expected


@pytest.mark.e2e
def test_cut_crop_is_no_larger_than_the_photo_and_keeps_the_margin(sharp_app_url, tmp_path, capsys):
    """On the test checkpoint random-sharp (conftest.SHARP_ARGS): the subject is smaller than the photo, so a crop
    that does nothing shows."""
    import numpy as np

    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(320, 240, seed=31))
    full, cropped = tmp_path / "full.png", tmp_path / "crop.png"
    assert main(["cut", str(photo_path), "--point", "160,120", "--mask-only", "-o", str(full),
                 "--url", sharp_app_url]) == 0
    assert main(["cut", str(photo_path), "--point", "160,120", "--crop", "--crop-margin", "3", "-o", str(cropped),
                 "--url", sharp_app_url]) == 0, capsys.readouterr().err
    mask = np.asarray(decode(full.read_bytes()))
    real_mask(mask)
    x0, y0, x1, y1 = crop_box(mask, 3)
    assert decode(cropped.read_bytes()).size == (x1 - x0, y1 - y0)


@pytest.mark.e2e
def test_cut_shows_the_servers_reason_for_jpeg_without_background(app_url, tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(320, 240, seed=31))
    code = main(["cut", str(photo_path), "--point", "160,120", "-o", str(tmp_path / "x.jpg"), "--url", app_url])
    err = capsys.readouterr().err
    assert code == 1 and "422" in err and "JPEG has no transparency" in err
    assert not (tmp_path / "x.jpg").exists()


def test_cut_with_a_missing_output_folder(tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(32, 32))
    code = main(["cut", str(photo_path), "--point", "1,1", "-o", str(tmp_path / "nope" / "x.png")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_cut_with_a_service_that_does_not_answer(tmp_path, capsys):
    import socket

    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(32, 32))
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        code = main(["cut", str(photo_path), "--point", "1,1", "-o", str(tmp_path / "x.png"),
                     "--url", f"http://127.0.0.1:{port}", "--timeout", "1"])
    assert code == 3 and "did not answer within 1 s" in capsys.readouterr().err


def test_cut_needs_a_point_or_a_box(tmp_path, capsys):
    photo_path = tmp_path / "photo.jpg"
    photo_path.write_bytes(jpeg(32, 32))
    assert main(["cut", str(photo_path), "-o", str(tmp_path / "x.png")]) == 2
    assert "--point" in capsys.readouterr().err


def test_cut_refuses_a_malformed_point(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["cut", "photo.jpg", "--point", "12", "-o", "x.png"])
    assert info.value.code == 2 and "expected 2 comma-separated numbers" in capsys.readouterr().err


def test_ray_started_by_bgremove_runs_its_workers_at_normal_priority():
    """`bgremove serve` / `bench` start Ray with worker niceness 0 (Ray's default is 15: see serve_app/local_ray.py)."""
    import subprocess
    import sys

    from serve_app.local_ray import WORKER_NICENESS

    script = ("import os, ray\n"
              "from serve_app.local_ray import init_local_ray\n"
              "init_local_ray(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
              "print('nice', ray.get(ray.remote(lambda: os.nice(0)).remote()))\n"
              "ray.shutdown()\n")
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="bgn")  # a fresh local Ray of its own, never the tests' one (short: socket paths)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_TMPDIR": tmp}
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert f"nice {WORKER_NICENESS}" in out.stdout, out.stderr[-2000:]


def test_free_port_picks_below_the_ephemeral_range_never_twice_and_never_one_in_use(monkeypatch):
    """The servers' ports (bgremove bench's graph, the tests' Serve) come from below the kernel's ephemeral range,
    where no outgoing connection or port Ray asks the kernel for can take them before the bind."""
    import socket

    from serve_app import local_ray

    low, high = (int(n) for n in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    port = local_ray.free_port()
    assert local_ray.PORT_RANGE[0] <= port <= local_ray.PORT_RANGE[1] < low, (port, low, high)
    monkeypatch.setattr(local_ray, "PORT_RANGE", (port, port))
    assert local_ray.free_port() != port  # handed out already, though nothing is bound to it yet
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        monkeypatch.setattr(local_ray, "PORT_RANGE", (taken, taken))
        assert local_ray.free_port() != taken  # something listens on it


def test_serve_without_network_says_where_the_checkpoint_goes_in_one_line_and_exits_2(tmp_path):
    """No network (a proxy that refuses every connection) and an empty cache: `bgremove serve` fails before it
    starts Ray, with one line naming the URL, the path the file belongs at and BGREMOVE_CHECKPOINT=random."""
    import subprocess
    import sys

    from deployments.weights import OFFICIAL_CHECKPOINTS

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGREMOVE_", "RAY_"))}
    dead = f"http://127.0.0.1:{free_port()}"
    env.update(https_proxy=dead, HTTPS_PROXY=dead, http_proxy=dead, HTTP_PROXY=dead, no_proxy="", NO_PROXY="",
               BGREMOVE_CACHE_DIR=str(tmp_path / "cache"))
    bgremove = os.path.join(os.path.dirname(sys.executable), "bgremove")
    done = subprocess.run([bgremove, "serve", "--model", "tiny", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=120)
    official = OFFICIAL_CHECKPOINTS["tiny"]
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert output.count("\n") == 0 and output.startswith("error: "), output  # one line, nothing else
    assert official.url in output and str(tmp_path / "cache" / official.filename) in output, output
    assert "BGREMOVE_CHECKPOINT=random" in output and "Traceback" not in output
    assert not (tmp_path / "cache" / official.filename).exists()  # no partial file left behind
