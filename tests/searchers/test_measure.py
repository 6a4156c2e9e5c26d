"""`python -m searchers measure DIR`: the delivered model.onnx timed here, compared with the profile's
prediction only when the profile was measured on this machine (searchers/cost/delivered.py)."""
import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from searchers.cost import exact_runtime, load_profile
from searchers.cost.delivered import measure_delivered
from searchers.cost.measure import host_identity, measured_here, random_arch
from searchers.cost.onnx_timing import all_threads
from searchers.result import SearchResult
from searchers.spaces.mbconv import MBConvArch

ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "searchers", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)

FAST = ("--repeats", "3", "--warmup", "1")


@pytest.fixture
def result_dir(tmp_path):
    """A result folder as a search writes it (result.json, model.pt, model.onnx), without the search."""
    arch = random_arch(random.Random(0), 0.25, 32, se=True)
    SearchResult(method="single-path", hyperparameters={}, settings={"profile": "pixel1-single-path"},
                 arch=str(arch), runtime_ms=None, flops=0.0, params=0, val_acc=0.5, test_acc=0.5, epochs=1,
                 wall_s=1.0, history=[], model=arch.build().eval(), arch_obj=arch).save(tmp_path / "run")
    return tmp_path / "run"


def test_measure_times_the_onnx_model_and_says_why_a_pixel_profile_is_not_compared(result_dir):
    r = cli("measure", str(result_dir), *FAST)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"measured  {result_dir}/model.onnx at 32x32 with ONNX Runtime ")
    assert "1 thread " in lines[0] and "(median of 3 runs after 1 warm-up)" in lines[0]
    assert "not compared with the prediction" in lines[1] and "table of another device (Google Pixel 1" in lines[1]
    got = json.loads((result_dir / "measured.json").read_text())
    assert [t["threads"] for t in got["timings"]] == sorted({1, all_threads()})
    assert all(len(t["times_ms"]) == 3 and t["median_ms"] > 0 for t in got["timings"])
    assert got["comparison"] is None and got["this_machine"] is False and got["lines"] == lines[:-1]


def test_a_profile_made_here_gives_predicted_vs_measured_at_its_own_size(result_dir, tmp_path):
    prof = tmp_path / "here.json"
    r = cli("profile", "--image-size", "64", "--width", "0.25", "--repeats", "1", "--passes", "1", "--validate", "0",
            "--out", str(prof))
    assert r.returncode == 0, r.stderr[-2000:]
    profile = load_profile(str(prof))
    assert profile.measured["host"]["hostname"] == host_identity()["hostname"] and measured_here(profile)[0]
    r = cli("measure", str(result_dir), "--profile", str(prof), *FAST)
    assert r.returncode == 0, r.stderr
    assert "predicted " in r.stdout and "measured on this machine" in r.stdout
    c = json.loads((result_dir / "measured.json").read_text())["comparison"]
    predicted = exact_runtime(profile, MBConvArch.parse(json.loads((result_dir / "result.json").read_text())["arch"]))
    assert c["predicted_ms"] == predicted and c["input_size"] == 64 and c["weights"] == "trained"
    assert c["onnx"]["input_shape"] == [1, 3, 64, 64] and c["threads"] == 1
    assert c["error_pct"] == pytest.approx(100 * (predicted - c["onnx"]["median_ms"]) / c["onnx"]["median_ms"])
    assert f"error {c['error_pct']:+.1f} %" in r.stdout


def test_a_profile_of_another_host_or_of_no_host_is_not_compared(result_dir):
    here = dataclasses.replace(load_profile("pixel1-single-path"),
                               measured={"settings": {"timing": {"device": "cpu"}}, "host": host_identity()})
    assert measured_here(here)[0]
    other = dataclasses.replace(here, measured={**here.measured, "host": {**host_identity(), "hostname": "elsewhere"}})
    m = measure_delivered(result_dir, profile=other, repeats=1, warmup=0)
    assert m.comparison is None and "another machine (hostname 'elsewhere'" in m.why
    old = dataclasses.replace(here, measured={"settings": {}})
    assert "records no host" in measured_here(old)[1]


@pytest.mark.parametrize("case, args, message", [
    ("missing", [], "is not a result folder (no such directory)"),
    ("no-onnx", [], "holds no model.onnx"),
    ("bad-json", [], "result.json is not a search result"),
    ("ok", ["--repeats", "0"], "need repeats >= 1"),
    ("ok", ["--warmup", "-1"], "warmup >= 0"),
    ("ok", ["--profile", "pixel9"], "unknown device profile 'pixel9'"),
])
def test_measure_bad_input_is_one_line_exit_2_and_writes_nothing(result_dir, tmp_path, capsys, case, args, message):
    from searchers.__main__ import main

    folder = tmp_path / "nope" if case == "missing" else result_dir
    if case == "no-onnx":
        (result_dir / "model.onnx").unlink()
    if case == "bad-json":
        (result_dir / "result.json").write_text("[1, 2]")
    assert main(["measure", str(folder), *args]) == 2   # in-process: the CLI's own error path, no start-up
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert out.out == "" and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.err
    assert not (folder / "measured.json").exists() and not (tmp_path / "nope").exists()
