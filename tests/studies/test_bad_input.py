"""Every input of every study is checked before Ray starts and before anything is written: the data
spec, the profile, the target against what the searcher can measure (asked of the searcher), every
numeric flag. One line naming the problem, exit 2, nothing under --out, no Ray."""
import sys

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Data folders that cannot make a classification task."""
    root = tmp_path_factory.mktemp("broken")
    (root / "empty" / "train").mkdir(parents=True)
    (root / "empty" / "test").mkdir()
    for split in ("train", "test"):
        (root / "one" / split / "cat").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "one" / split / "cat" / "0.png")
    return root


CASES = [   # (argv, message); the ray runner is each study's default
    (["--data", "/nonexistent"], "data '/nonexistent' does not exist; valid choices: digits, cifar10:DIR"),
    (["--data", "{broken}/empty"], "a classification task needs at least 2"),
    (["--data", "{broken}/one"], "has 1 class folder(s) with images (cat)"),
    (["--data", "cifar10:{broken}"], "has no cifar-10-batches-py/"),
    (["--concurrency", "0"], "--concurrency must be >= 1"),
    (["--cpus-per-trial", "0"], "cpus per trial must be > 0"),
    (["--cpus-per-trial", "nan"], "cpus per trial must be > 0"),
    (["--cpus-per-trial", "100000"], "exceeds this machine's"),            # Ray would wait forever
    (["--gpus-per-trial", "1"], "needs --device cuda"),
    (["--profile", "pixel9"], "unknown device profile 'pixel9'"),
    (["--target-ms", "500"], "outside what profile pixel1-single-path can reach"),
    (["--searcher", "gold"], "searcher gold has no runtime model"),
    (["--searcher", "entran", "--target-ms", "60"], "use a FLOPs target (--target-mflops) or one of: single-path, "),
    (["--data-limit", "0"], "data limit must be >= 1"),
    (["--seed", "-1"], "seed must be >= 0"),
    (["--batch-size", "0"], "batch size must be > 0"),
    (["--width", "nan"], "width must be > 0"),
]
STUDIES = {   # each study's own flags that make it small, so a missed refusal would not run for long
    "tune_lambda": ["--trials", "1", "--fidelity", "1", "--min-fidelity", "1"],
    "compare_solvers": ["--quick", "--solvers", "random"],
    "fidelity_grid": ["--quick"],
    "variance": ["--quick", "--formulations", "single-path-sigmoid"],
}


@pytest.mark.parametrize("study", list(STUDIES))
@pytest.mark.parametrize("argv, message", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_exit_2_before_ray_and_writes(study, argv, message, broken, tmp_path, capsys):
    from _common import run_cli

    out = tmp_path / "out"
    mod = __import__(study)
    argv = [a.format(broken=broken) for a in argv]
    if study == "variance":   # it takes its searchers as --formulations
        argv = ["--formulations" if a == "--searcher" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: mod.main([*STUDIES[study], *argv, "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_random_search_refuses_a_flops_target_before_any_work(tmp_path, capsys):
    """The searcher declares it needs a runtime target; the variance study asks it."""
    from _common import run_cli
    import variance

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: variance.main(["--quick", "--formulations", "random", "--target-mflops", "5",
                                       "--out", str(out)]))
    assert e.value.code == 2 and "it needs a runtime target (--target-ms)" in capsys.readouterr().err
    assert not out.exists()
