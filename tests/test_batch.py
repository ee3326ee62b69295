"""`bgremove batch`: listing, manifests, resumption (plain functions), and the Ray Data job end to end with the
real model code (tiny SAM 2.1, seeded random weights): outputs byte-identical to /v1/cutout of the real graph,
one error row per bad input, a driver killed midway and a rerun that finishes without redoing anything."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import TEST_ARGS
from images import jpeg, photo
from serve_app import batch
from serve_app.config import AppArgs

ROOT = Path(__file__).resolve().parents[1]


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def mixed_folder(root: Path) -> dict[str, bytes]:
    """Photos of several sizes and modes, an EXIF-rotated one, and files that are not photos."""
    rgb = photo(240, 180, seed=5)
    rgba = Image.fromarray(photo(200, 160, seed=6)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(200)[None, :] < 20, 0, 255).repeat(160, 0).astype(np.uint8)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    wide = photo(320, 200, seed=8).astype(np.uint16) * 257
    files = {
        "shoes/a.jpg": jpeg(320, 240, seed=1),
        "shoes/rotated.jpg": save(Image.fromarray(photo(200, 120, seed=7)), "JPEG", exif=exif.tobytes(), quality=95),
        "bags/alpha.png": save(rgba, "PNG"),
        "bags/grey.png": save(Image.fromarray(rgb).convert("L"), "PNG"),
        "palette.gif": save(Image.fromarray(rgb).convert("P"), "GIF"),
        "cmyk.jpg": save(Image.fromarray(photo(160, 200, seed=9)).convert("CMYK"), "JPEG", quality=95),
        "deep.png": save(Image.fromarray(np.ascontiguousarray(wide[..., 0])), "PNG"),  # 16-bit grey
        "broken.jpg": jpeg(320, 240, seed=3)[:400],
        "empty.png": b"",
        "notes.txt": b"not a photo, and not listed: only image suffixes are",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


# -- listing and resumption, no Ray -------------------------------------------------------------------------------


def test_folder_listing_keeps_relative_paths_and_swaps_the_suffix(tmp_path):
    mixed_folder(tmp_path)
    photos, failed = batch.list_inputs(batch.Job(str(tmp_path), str(tmp_path / "out"), {"format": "webp"}))
    assert failed == []
    by_path = {p.path: p.output for p in photos}
    assert "notes.txt" not in by_path and len(by_path) == 9
    assert by_path["shoes/a.jpg"] == "shoes/a.webp" and by_path["palette.gif"] == "palette.webp"
    globbed, _ = batch.list_inputs(batch.Job(str(tmp_path / "shoes" / "*.jpg"), str(tmp_path / "out")))
    assert sorted(p.output for p in globbed) == ["a.png", "rotated.png"]


def test_manifest_rows_that_name_no_photo_are_error_rows(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n".join([
        json.dumps({"path": "a.jpg", "points": [[1, 2]], "format": "jpeg", "background": "white"}),
        "{not json",
        json.dumps({"points": [[1, 2]]}),
        json.dumps({"path": "../outside.jpg"}),
        json.dumps({"path": "b.jpg", "colour": "red"}),
        json.dumps({"path": "c.jpg", "format": "jpeg"}),  # JPEG without a background: the API's 422
        json.dumps({"path": "d.jpg", "feather": 500}),
        "",
    ]))
    photos, failed = batch.list_inputs(batch.Job(str(tmp_path / "m.jsonl"), str(tmp_path / "out")))
    assert [(p.path, p.output, p.points) for p in photos] == [("a.jpg", "a.jpg", [[1, 2]])]
    assert photos[0].source == os.path.join(str(tmp_path), "a.jpg")
    codes = {row["path"]: row["code"] for row in failed}
    assert codes == {"m.jsonl:2": "invalid_manifest_row", "m.jsonl:3": "invalid_manifest_row",
                     "../outside.jpg": "invalid_manifest_row", "b.jpg": "invalid_manifest_row",
                     "c.jpg": "jpeg_needs_background", "d.jpg": "invalid_feather"}
    assert all(set(row) == {"path", "status", "code", "message"} and row["message"] for row in failed)


def test_a_rerun_skips_outputs_and_final_errors_but_redoes_the_rest(tmp_path):
    source = tmp_path / "in"
    mixed_folder(source)
    out = tmp_path / "out"
    (out / "shoes").mkdir(parents=True)
    (out / "shoes" / "a.png").write_bytes(b"done earlier")
    (out / "shoes" / ".rotated.png.partial-123").write_bytes(b"half a file from a killed job")
    (out / "errors.jsonl").write_text(
        json.dumps({"path": "broken.jpg", "status": 415, "code": "unsupported_media_type", "message": "m"}) + "\n" +
        json.dumps({"path": "cmyk.jpg", "status": 503, "code": "model_fault", "message": "m"}) + "\n" +
        '{"path": "deep.png", "sta')  # a line cut short by a kill
    todo, kept, skipped = batch.plan(batch.Job(str(source), str(out)))
    assert skipped == 1 and list(kept) == ["broken.jpg"]  # a 503 is retried, a 415 is not
    assert sorted(p.path for p in todo) == sorted(
        ["shoes/rotated.jpg", "bags/alpha.png", "bags/grey.png", "palette.gif", "cmyk.jpg", "deep.png", "empty.png"])
    assert not (out / "shoes" / ".rotated.png.partial-123").exists()
    todo, kept, _ = batch.plan(batch.Job(str(source), str(out), retry_failed=True))
    assert kept == {} and "broken.jpg" in {p.path for p in todo}


def test_a_cluster_failure_resumes_the_photos_without_output_and_counts_each_photo_once(tmp_path, monkeypatch):
    """The job-level resume (`runner._execute_resuming`) with a fake pipeline: the first attempt reports one photo,
    writes a second without reporting it, then loses a node; the second attempt gets only the rest; a failure on
    every attempt still raises after RESUMES."""
    import ray.exceptions

    from serve_app.batch import runner

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i in range(5):
        (source / f"p{i}.jpg").write_bytes(jpeg(64, 48, seed=i))
    job = batch.Job(str(source), str(out), progress=False)
    todo, kept, _ = batch.plan(job)
    out.mkdir()
    log = runner.ErrorLog(str(out), kept)
    calls: list[list[str]] = []

    def pipeline(job, photos, log, summary, start, memory, reported, fail_every_time=False):
        calls.append(sorted(p.path for p in photos))
        for photo in photos[:2] if (len(calls) == 1 or fail_every_time) else photos:
            (Path(job.output) / photo.output).write_bytes(b"cut-out")
            if photo is photos[0] or len(calls) > 1:  # the second photo of the first attempt is never reported
                reported.add(photo.path)
                summary.done += 1
        if len(calls) == 1 or fail_every_time:
            raise ray.exceptions.ObjectLostError("00" * 28, "owner", "call site")

    monkeypatch.setattr(runner, "_execute", pipeline)
    summary = batch.Summary(total=len(todo))
    runner._execute_resuming(job, todo, log, summary, 0.0)
    first = sorted(p.path for p in todo)
    assert calls == [first, first[2:]] and summary.done == 5
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(5)]

    calls.clear()
    (tmp_path / "out2").mkdir()
    again = batch.Job(str(source), str(tmp_path / "out2"), progress=False)
    monkeypatch.setattr(runner, "_execute", lambda *a: pipeline(*a, fail_every_time=True))
    with pytest.raises(ray.exceptions.ObjectLostError):
        runner._execute_resuming(again, todo, log, batch.Summary(total=len(todo)), 0.0)
    assert len(calls) == runner.RESUMES + 1 and [len(c) for c in calls] == [5, 3, 1]


def test_two_inputs_for_one_output_file_are_refused_not_overwritten(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg(64, 48))
    (tmp_path / "a.png").write_bytes(jpeg(64, 48))
    todo, kept, _ = batch.plan(batch.Job(str(tmp_path), str(tmp_path / "out")))
    assert [p.path for p in todo] == ["a.jpg"] and kept["a.png"]["code"] == "duplicate_output"


def test_default_prompt_box_holds_the_subject_of_every_synthetic_photo():
    """The default prompt (no points, no box) is the box batch.default_box gives. On the synthetic set (a disc at a
    random place, radius a quarter of the short side) it holds the whole subject, measured from the pixels, in
    every photo. The set reaches close to the frame (some subject comes within 6% of a side of the edge), so a box
    with a wider margin than that would cut a subject and fail here."""
    inside_box = on_centre = 0
    closest = 1.0  # the smallest gap between a subject and the frame's edge, as a share of that side
    sizes = [(640, 480), (480, 640), (1024, 768), (300, 300)]
    n = 0
    for width, height in sizes:
        for seed in range(25):
            rgb = photo(width, height, seed)
            subject = np.all(np.abs(rgb.astype(int) - [220, 60, 40]) < 30, axis=-1)
            ys, xs = np.nonzero(subject)
            x0, y0, x1, y1 = batch.default_box(width, height)
            inside_box += bool(xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1)
            on_centre += bool(subject[height // 2, width // 2])
            closest = min(closest, xs.min() / width, ys.min() / height, 1 - (xs.max() + 1) / width,
                          1 - (ys.max() + 1) / height)
            n += 1
    print(f"\n[default prompt] subject inside the default box: {inside_box}/{n}; centre point on the subject: "
          f"{on_centre}/{n}; closest subject to the frame: {closest:.1%} of a side")
    assert closest < 0.06
    assert inside_box == n


# -- the Ray Data job end to end --------------------------------------------------------------------------------


def manifest_rows() -> list[dict]:
    return [
        {"path": "shoes/a.jpg", "points": [[160, 120]]},
        {"path": "bags/alpha.png", "points": [[100, 80], [30, 30]], "labels": [1, 0], "format": "webp",
         "crop": True, "crop_margin": 4},
        {"path": "cmyk.jpg", "box": [20, 30, 140, 180], "format": "jpeg", "background": "#ffffff"},
        {"path": "palette.gif", "points": [[120, 90]], "mask_only": True, "feather": 2},
        {"path": "shoes/rotated.jpg"},  # no prompt: the default box, on the EXIF-oriented 120x200 photo
        {"path": "deep.png", "points": [[5000, 1]]},  # outside the photo: 422
        {"path": "bags/grey.png", "points": [[1, 2]], "labels": [1, 0]},  # labels mismatch: 422
        {"path": "missing.jpg", "points": [[1, 1]]},
        {"path": "broken.jpg", "points": [[1, 1]]},
    ]


def cutout_over_http(url: str, data: bytes, photo_: batch.Photo, width: int, height: int) -> bytes:
    fields = {name: ("true" if value is True else str(value)) for name, value in photo_.options.items()}
    box = photo_.box if (photo_.points or photo_.box is not None) else batch.default_box(width, height)
    for name, value in (("points", photo_.points), ("labels", photo_.labels), ("box", box)):
        if value is not None:
            fields[name] = json.dumps(value)
    response = httpx.post(url + "/v1/cutout", files={"image": ("p", data)}, data=fields, timeout=300)
    assert response.status_code == 200, response.text
    return response.content


@pytest.mark.e2e
def test_manifest_job_matches_the_service_byte_for_byte_with_one_error_row_per_bad_input(app_url, tmp_path):
    source = tmp_path / "in"
    files = mixed_folder(source)
    manifest = source / "catalogue.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in manifest_rows()) + "\n{broken line\n")
    out = tmp_path / "out"
    job = batch.Job(str(manifest), str(out), args=AppArgs(**TEST_ARGS), batch_size=2, progress=False)

    summary = batch.run(job)
    print(f"\n[batch] {json.dumps(summary.as_dict())}")
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {row["path"]: (row["status"], row["code"]) for row in errors} == {
        "deep.png": (422, "point_outside_image"), "bags/grey.png": (422, "labels_length_mismatch"),
        "missing.jpg": (400, "file_not_found"), "broken.jpg": (415, "unsupported_media_type"),
        "catalogue.jsonl:10": (400, "invalid_manifest_row")}
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "errors.jsonl")
    assert written == ["bags/alpha.webp", "cmyk.jpg", "palette.png", "shoes/a.png", "shoes/rotated.png"]
    assert (summary.done, summary.failed, summary.skipped, summary.exit_code) == (5, 5, 0, 1)

    photos, _ = batch.list_inputs(job)
    for photo_ in photos:
        if not (out / photo_.output).exists():
            continue
        data = files[photo_.path]
        width, height = Image.open(out / photo_.output).size if not photo_.options.get("crop") else (0, 0)
        served = cutout_over_http(app_url, data, photo_, width, height)
        assert (out / photo_.output).read_bytes() == served, photo_.path
    rotated = Image.open(out / "shoes/rotated.png")
    assert (rotated.size, rotated.mode) == ((120, 200), "RGBA")

    # A rerun finds everything done or finally refused: it cuts nothing and rewrites no output.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.name != "errors.jsonl"}
    again = batch.run(job)
    assert (again.done, again.skipped, again.failed) == (0, 5, 5)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*") if p.name != "errors.jsonl"} == before
    assert len((out / "errors.jsonl").read_text().splitlines()) == 5


def test_bad_arguments_exit_2(tmp_path):
    from serve_app.cli import main

    assert main(["batch", str(tmp_path / "nothing-here"), "-o", str(tmp_path / "out")]) == 2
    (tmp_path / "in").mkdir()
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--background", "not-a-colour"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "file")]) == 2


def _cli(source: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "serve_app.cli", "batch", str(source), "-o", str(out), "--model", "tiny",
               "--checkpoint", "random", "--device", "cpu", "--batch-size", "1", "--no-progress"]
    # A private Ray temp dir: this job's own local Ray, never another one found on the machine. Its own session:
    # every process it starts (Ray's too) can be ended with it.
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="bgb"), "RAY_ADDRESS": ""}
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.e2e
def test_a_job_killed_midway_completes_on_rerun_without_redoing_or_duplicating(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    names = [f"p{i:02d}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        (source / name).write_bytes(jpeg(160, 120, seed=i))
    first = _cli(source, out)
    try:
        deadline = time.monotonic() + 600
        while len(list(out.glob("*.png"))) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, f"the job ended before it could be killed:\n{first.stdout.read()}"
        os.kill(first.pid, signal.SIGKILL)  # the driver, as a lost terminal or an OOM killer would
        first.wait(timeout=60)
    finally:
        time.sleep(2)
        try:
            os.killpg(first.pid, signal.SIGKILL)  # whatever the driver had started
        except ProcessLookupError:
            pass
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 2 <= len(finished) < len(names)
    print(f"\n[batch] killed after {len(finished)} of {len(names)} photos")

    second = _cli(source, out)
    try:
        output, _ = second.communicate(timeout=900)
    finally:
        try:
            os.killpg(second.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert second.returncode == 0, output
    summary = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    assert (summary["done"], summary["skipped"], summary["failed"]) == (len(names) - len(finished), len(finished), 0)
    # Memory stays bounded: the driver holds no photos (its RSS does not grow between the first result and the
    # end) and no worker goes past the size of a model plus a batch.
    print(f"[batch] driver RSS {summary['driver_rss_mb']}, largest worker {summary['worker_max_rss_mb']} MB")
    assert summary["driver_rss_mb"]["end"] - summary["driver_rss_mb"]["first_result"] < 100
    assert summary["worker_max_rss_mb"] < 4096
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(name.replace(".jpg", ".png") for name in names)  # no partial files, no duplicates
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished  # not redone


def test_rayjob_manifest_runs_the_batch_verb_on_the_service_image():
    import shlex

    import yaml

    from serve_app.cli import build_parser

    job = yaml.safe_load((ROOT / "cluster" / "rayjob-batch.yaml").read_text())
    service = next(doc for doc in yaml.safe_load_all((ROOT / "cluster" / "rayservice.yaml").read_text())
                   if doc["kind"] == "RayService")
    assert job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"] is True
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[0] == "bgremove"
    args = build_parser().parse_args(command[1:])  # exits (SystemExit) on a flag the verb does not have
    assert args.verb == "batch" and args.batch_size > 4  # bigger encoder batches than the service's
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == service["spec"]["rayClusterConfig"]["rayVersion"]
    images = {c["image"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in group["template"]["spec"]["containers"]}
    service_cluster = service["spec"]["rayClusterConfig"]
    assert images == {c["image"] for group in [service_cluster["headGroupSpec"], *service_cluster["workerGroupSpecs"]]
                      for c in group["template"]["spec"]["containers"]}
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["rayStartParams"]["num-gpus"] == "1"
