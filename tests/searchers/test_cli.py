import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "searchers", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def test_info_reports_the_profile_range():
    r = cli("info", "--profile", "pixel1-single-path")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["runtime_ms_min"] == pytest.approx(30.63, abs=0.01)
    assert info["runtime_ms_max"] == pytest.approx(131.46, abs=0.01)


@pytest.mark.parametrize("args, message", [
    (["run", "single-path", "--variant", "gumbel"], "valid choices"),
    (["run", "nope"], "valid choices"),
    (["run", "single-path", "--profile", "pixel9"], "pixel1-single-path"),
    (["run", "single-path", "--data", "/nonexistent/dir"], "digits"),
    (["run", "single-path", "--epochs", "0"], "epochs"),
    (["run", "single-path", "--lam", "-1"], "lam"),
    (["run", "single-path", "--out", "/proc/forbidden"], "not writable"),
    (["info", "--profile", "nope"], "valid choices"),
    (["run", "gold", "--target-ms", "80"], "gold has no runtime model"),     # asked of the searcher
    (["run", "random"], "needs a runtime target (--target-ms)"),
    (["run", "random", "--target-ms", "300"], "outside what profile pixel1-single-path can reach"),
    (["run", "single-path", "--data-limit", "0"], "data limit must be >= 1"),
    (["run", "single-path", "--seed", "-1"], "seed must be >= 0"),
])
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "o")] if args[0] == "run" else args
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_empty_data_dir_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("run", "single-path", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "empty" in r.stderr


def test_run_writes_result_model_and_onnx(tmp_path):
    out = tmp_path / "run"
    r = cli("run", "single-path", "--lam", "0.1", "--epochs", "1", "--width", "0.25", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "result.json").read_text())
    for key in ("method", "hyperparameters", "arch", "runtime_ms", "flops", "params", "val_acc", "test_acc",
                "epochs", "wall_s", "history"):
        assert key in res
    assert res["hyperparameters"]["lam"] == 0.1 and len(res["history"]) == 1
    assert (out / "model.pt").stat().st_size > 0
    import onnx
    import onnxruntime as ort
    import numpy as np
    import torch
    from searchers import load_model

    onnx.checker.check_model(str(out / "model.onnx"))
    arch, model = load_model(out / "model.pt")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, model(torch.from_numpy(x)).detach().numpy(), atol=1e-4, rtol=1e-3)
