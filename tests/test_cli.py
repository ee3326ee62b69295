"""The bgremove command line: cut against a running service, refusals, a service that is down, weights."""

import pytest

from serve_app.cli import main

from conftest import free_port
from images import decode, jpeg


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
