"""Checkpoints: downloaded from a (local) HTTP server, verified by SHA-256, loaded with weights_only=True."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from deployments.sam_model import build_model
from deployments import weights
from deployments.settings import SegmenterConfig

from conftest import free_port


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory) -> Path:
    """A real SAM 2.1 tiny checkpoint (seed 123, so it differs from the default random weights), in FP16
    to keep it small; load_state_dict casts it into the FP32 model."""
    model = build_model(SegmenterConfig(model="tiny", checkpoint="random", seed=123), torch.device("cpu"))
    path = tmp_path_factory.mktemp("served") / "sam2.1_tiny_custom.pt"
    torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def http_server(checkpoint_file):
    directory = str(checkpoint_file.parent)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verify_and_load(http_server, checkpoint_file, tmp_path):
    url = f"{http_server}/{checkpoint_file.name}"
    config = SegmenterConfig(model="tiny", checkpoint=url, checkpoint_sha256=sha256(checkpoint_file),
                             cache_dir=str(tmp_path))
    model = build_model(config, torch.device("cpu"), progress=False)
    cached = tmp_path / checkpoint_file.name
    assert cached.exists() and sha256(cached) == sha256(checkpoint_file)
    served = torch.load(checkpoint_file, weights_only=True)["model"]
    name = "sam_mask_decoder.output_upscaling.0.weight"
    # Copies of stored numbers, not two computations: equal bit for bit on every CPU.
    assert torch.equal(model.state_dict()[name], served[name].float())
    default_random = build_model(SegmenterConfig(model="tiny", checkpoint="random"), torch.device("cpu"))
    assert not torch.equal(default_random.state_dict()[name], model.state_dict()[name])
    # A second start finds the verified file and does not download again.
    assert weights.resolve("tiny", url, sha256(checkpoint_file), cache_dir=tmp_path, download_missing=False).path == cached


def test_wrong_sha256_is_refused_and_nothing_is_kept(http_server, checkpoint_file, tmp_path):
    url = f"{http_server}/{checkpoint_file.name}"
    with pytest.raises(weights.WeightsError, match="failed verification"):
        weights.resolve("tiny", url, "0" * 64, cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_url_without_sha256_is_refused():
    with pytest.raises(weights.WeightsError, match="checkpoint_sha256"):
        weights.resolve("tiny", "https://example.invalid/x.pt")


def test_no_network_gives_one_clear_message(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/sam2.1_hiera_tiny.pt"  # nothing listens there
    with pytest.raises(weights.WeightsError) as info:
        weights.resolve("tiny", url, "0" * 64, cache_dir=tmp_path, progress=False)
    message = str(info.value)
    assert url in message and str(tmp_path / "sam2.1_hiera_tiny.pt") in message and "put it" in message


def test_auto_names_the_official_url_and_the_expected_path(tmp_path):
    with pytest.raises(weights.WeightsError) as info:
        weights.resolve("base_plus", "auto", cache_dir=tmp_path, download_missing=False)
    message = str(info.value)
    assert weights.OFFICIAL_CHECKPOINTS["base_plus"].url in message
    assert str(tmp_path / "sam2.1_hiera_base_plus.pt") in message


def test_local_file_with_an_official_name_is_verified(tmp_path):
    fake = tmp_path / "sam2.1_hiera_tiny.pt"
    fake.write_bytes(b"not the real checkpoint")
    with pytest.raises(weights.WeightsError, match="failed verification"):
        weights.resolve("tiny", str(fake))
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.resolve("tiny", str(tmp_path / "missing.pt"))


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("import os; os.environ['BGREMOVE_PWNED'] = '1'",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(Exception):
        weights.load_state_dict(path)
    import os
    assert "BGREMOVE_PWNED" not in os.environ


def test_random_weights_are_seeded():
    a = build_model(SegmenterConfig(model="tiny", checkpoint="random", seed=7), torch.device("cpu")).state_dict()
    b = build_model(SegmenterConfig(model="tiny", checkpoint="random", seed=7), torch.device("cpu")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # one seeded generator, run twice in one process: the same bits


def test_random_sharp_keeps_the_random_encoder_and_gives_real_masks_around_the_clicks():
    """The test checkpoint random-sharp (deployments/sam_model.py, sharpen): the seeded random weights with only the
    prompt encoder and mask decoder changed, and masks, by sam2's own predictor, that the mask-content tests can
    rely on: logits beyond +-4 (alpha 0 and 255), a kept share strictly between 0 and 1 holding the click, a box
    smaller than the photo, a mask that moves with the click and that an exclude click shrinks."""
    import numpy as np
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from images import photo

    resolved = weights.resolve("tiny", "random-sharp", seed=3)
    assert (resolved.is_random, resolved.sharp, resolved.seed) == (True, True, 3)
    sharp = build_model(SegmenterConfig(model="tiny", checkpoint="random-sharp"), torch.device("cpu"))
    plain = build_model(SegmenterConfig(model="tiny", checkpoint="random"), torch.device("cpu")).state_dict()
    changed = {k.split(".")[0] for k, v in sharp.state_dict().items() if not torch.equal(v, plain[k])}
    assert changed == {"sam_mask_decoder", "sam_prompt_encoder"}, changed

    predictor = SAM2ImagePredictor(sharp)
    predictor.set_image(photo(400, 300, seed=41))

    def mask(points, labels):
        logits, scores, _ = predictor.predict(np.array(points, np.float32), np.array(labels),
                                              multimask_output=len(points) == 1, return_logits=True)
        best = logits[int(np.argmax(scores))]
        assert best.min() < -4 and best.max() > 4, (best.min(), best.max())
        return best > 0

    middle, corner = mask([[200, 150]], [1]), mask([[50, 50]], [1])
    for kept, (x, y) in ((middle, (200, 150)), (corner, (50, 50))):
        rows, cols = np.flatnonzero(kept.any(1)), np.flatnonzero(kept.any(0))
        assert 0 < kept.mean() < 0.5 and kept[y, x], kept.mean()
        assert cols[-1] + 1 - cols[0] < 400 and rows[-1] + 1 - rows[0] < 300
    assert not middle[50, 50] and not corner[150, 200]
    carved = mask([[200, 150], [240, 150]], [1, 0])
    assert carved.sum() < middle.sum() and not carved[150, 240]


def test_official_table_is_complete():
    assert set(weights.OFFICIAL_CHECKPOINTS) == set(weights.MODEL_SIZES)
    for size, ckpt in weights.OFFICIAL_CHECKPOINTS.items():
        assert len(ckpt.sha256) == 64 and ckpt.url.endswith(ckpt.filename)


# -- local files: verified, or loaded unverified only when asked -----------------------------------------------------


def test_a_local_file_that_is_not_official_needs_its_sha256(checkpoint_file):
    with pytest.raises(weights.WeightsError) as info:
        weights.resolve("tiny", str(checkpoint_file))
    message = str(info.value)
    assert str(checkpoint_file) in message and "checkpoint_sha256" in message
    assert "allow_unverified_checkpoint" in message
    # The same refusal where the service builds its model, before torch.load sees the file.
    with pytest.raises(weights.WeightsError, match="checkpoint_sha256"):
        build_model(SegmenterConfig(model="tiny", checkpoint=str(checkpoint_file)), torch.device("cpu"))


def test_a_local_file_with_its_sha256_is_verified_and_loaded(checkpoint_file):
    assert weights.resolve("tiny", str(checkpoint_file), sha256(checkpoint_file)).path == checkpoint_file
    with pytest.raises(weights.WeightsError, match="failed verification"):
        weights.resolve("tiny", str(checkpoint_file), "0" * 64)
    # Through the app's arguments and their environment override, as `BGREMOVE_CHECKPOINT=... make serve` gives.
    from serve_app.config import AppArgs

    args = AppArgs().with_env({"BGREMOVE_MODEL": "tiny", "BGREMOVE_CHECKPOINT": str(checkpoint_file),
                               "BGREMOVE_CHECKPOINT_SHA256": sha256(checkpoint_file)})
    assert args.segmenter().checkpoint_sha256 == sha256(checkpoint_file)
    model = build_model(args.segmenter(), torch.device("cpu"))
    served = torch.load(checkpoint_file, weights_only=True)["model"]
    name = "sam_mask_decoder.output_upscaling.0.weight"
    # Copies of stored numbers, not two computations: equal bit for bit on every CPU.
    assert torch.equal(model.state_dict()[name], served[name].float())


def test_the_opt_out_loads_an_unverified_local_file_and_says_so(checkpoint_file, caplog):
    from serve_app.config import AppArgs

    args = AppArgs(model="tiny", checkpoint=str(checkpoint_file), allow_unverified_checkpoint=True)
    with caplog.at_level("WARNING", logger=weights.__name__):
        build_model(args.segmenter(), torch.device("cpu"))
    assert "UNVERIFIED" in caplog.text and sha256(checkpoint_file) in caplog.text
    # The opt-out covers only that case: a wrong digest is still refused, and a URL still needs one.
    with pytest.raises(weights.WeightsError, match="failed verification"):
        weights.resolve("tiny", str(checkpoint_file), "0" * 64, allow_unverified=True)
    with pytest.raises(weights.WeightsError, match="checkpoint_sha256"):
        weights.resolve("tiny", "https://example.invalid/x.pt", allow_unverified=True)


def test_the_torch_floor_excludes_versions_whose_weights_only_load_runs_code():
    """CVE-2025-32434: torch.load(weights_only=True) could run code before torch 2.6. Every install path asks for
    2.6 or later (pyproject, the Makefile's first install, the image), and the installed torch is one."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version

    from serve_config import ROOT

    def floor(text: str) -> Version:
        requirement = Requirement(re.search(r'"(torch\s*>=[^"]+)"', text).group(1))
        return min(Version(spec.version) for spec in requirement.specifier if spec.operator == ">=")

    for path in ("pyproject.toml", "Makefile", "docker/Dockerfile"):
        assert floor((ROOT / path).read_text()) >= Version("2.6"), path
    assert Version(torch.__version__.split("+")[0]) >= Version("2.6")
