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
    assert "1.0x (free)" in info["se"]  # no SE was measured on Pixel 1


ARCH = ("mbconv w0.25 i32 n10 | k5e3se0.5 skip k3e3 k3e6se0.25 | k5e6 skip skip skip | k3e3 k3e3 k3e3 k3e3 | "
        "k5e6se0.5 k5e6 k5e6 k5e6 | k3e3 skip skip k5e6")


def test_info_prices_an_arch_string_and_a_result_file(tmp_path):
    from searchers.cost import count_flops, count_params, exact_runtime, load_profile
    from searchers.spaces.mbconv import MBConvArch

    r = cli("info", "--arch", ARCH, "--json")
    assert r.returncode == 0, r.stderr
    got, arch = json.loads(r.stdout), MBConvArch.parse(ARCH)
    assert got["runtime_ms"] == exact_runtime(load_profile("pixel1-single-path"), arch)
    assert got["macs_profile"] == count_flops(arch, 224) and got["macs_task"] == count_flops(arch)
    assert got["params"] == count_params(arch) and got["task_size"] == 32 and got["profile_size"] == 224
    assert [lp["block"] for lp in got["layers"]] == ARCH.replace("|", "").split()[4:]
    # Typed by hand with odd spacing, or read from a result folder: the same price, as text.
    (tmp_path / "result.json").write_text(json.dumps({"arch": ARCH}))
    for arch_arg in ("  " + ARCH.replace(" | ", "  |  "), str(tmp_path)):
        r = cli("info", "--arch", arch_arg)
        assert r.returncode == 0, r.stderr
        assert f"runtime       {got['runtime_ms']:.2f} ms (exact table sum: 19.60 ms constant" in r.stdout
        assert "MACs          38.48M at 224x224, 2.74M at 32x32" in r.stdout
        assert r.stdout.splitlines()[-1].split()[:2] == ["total", f"{got['runtime_ms']:.2f}"]


@pytest.mark.parametrize("args, message", [
    (["run", "single-path", "--variant", "gumbel"], "valid choices"),
    (["run", "nope"], "valid choices"),
    (["run", "single-path", "--profile", "pixel9"], "pixel1-single-path"),
    (["run", "single-path", "--data", "/nonexistent/dir"], "digits"),
    (["run", "single-path", "--epochs", "0"], "epochs"),
    (["run", "single-path", "--lam", "-1"], "lam"),
    (["run", "single-path", "--out", "/proc/forbidden"], "not writable"),
    (["info", "--profile", "nope"], "valid choices"),
    (["info", "--arch", ARCH.replace("k3e3 k3e3", "k3e3 k7e3", 1)], "layer 10: bad layer token 'k7e3'; a layer is k{3,5}"),
    (["info", "--arch", ARCH.replace("k5e6 skip", "skip skip", 1)], "bad layer token 'skip' at layer 5"),
    (["info", "--arch", ARCH.replace("w0.25 ", "")], "bad head 'mbconv i32 n10'; an mbconv architecture is"),
    (["info", "--arch", ARCH.rsplit("|", 1)[0]], "4 stages after the head, need 5"),
    (["info", "--arch", ARCH.replace(" k3e3 |", " |", 1)], "stage 3 'k3e3 k3e3 k3e3' has 3 layers, need 4"),
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
