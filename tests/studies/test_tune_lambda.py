"""studies/tune_lambda.py: its defaults are the solver contract's study, and --solver-option reaches the
solver strictly (unknown names and bad values: one line, exit 2, nothing written, before Ray)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from automl.study import StudyConfig
from automl.testing import solvers as contract
from automl.tuning import prepare_out
from searchers.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


def test_the_solver_contract_runs_the_cli_defaults():
    import tune_lambda

    args = tune_lambda.build_parser().parse_args([])
    config = tune_lambda.config_from_args(args)
    assert (config.fidelity, config.min_fidelity) == (contract.SPACE.max_fidelity, contract.SPACE.min_fidelity)
    assert config.budget == contract.BUDGET and config.trials == contract.TRIALS
    assert config.concurrency == contract.CONCURRENCY and config.solver_options == {}


def test_solver_options_are_parsed_as_json_and_saved(tmp_path):
    import tune_lambda

    args = tune_lambda.build_parser().parse_args(
        ["--solver", "tpe", "--solver-option", "n_startup_trials=3", "--solver-option", "constant-liar=false",
         "--out", str(tmp_path / "s")])
    config = tune_lambda.config_from_args(args)
    assert config.solver_options == {"n_startup_trials": 3, "constant_liar": False}
    (tmp_path / "s").mkdir()
    config.save(tmp_path / "s" / "study.json")
    assert json.loads((tmp_path / "s" / "study.json").read_text())["solver_options"] == config.solver_options
    assert StudyConfig.from_json(json.loads((tmp_path / "s" / "study.json").read_text())) == config
    # a resumed study must build the same solver: other options are another study
    other = StudyConfig.from_json({**config.to_json(), "solver_options": {"n_startup_trials": 4}})
    with pytest.raises(UsageError, match="differs in: solver_options"):
        prepare_out(other, resume=True)


@pytest.mark.parametrize("options, message", [
    ({"init_point": 3}, "unknown option of solver 'bo' 'init_point'; valid choices: init_points, acq, "),
    ({"init_points": "many"}, "must be int or None"),
])
def test_study_config_refuses_bad_solver_options(options, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        StudyConfig(out=str(tmp_path / "s"), solver="bo", solver_options=options)


@pytest.mark.parametrize("argv, message", [
    (["--solver-option", "etta=2", "--solver", "bohb"], "unknown option of solver 'bohb' 'etta'; valid choices: eta,"),
    (["--solver-option", "init_points=0"], "init_points (0)"),        # a range: when the solver is built
    (["--solver-option", "init_points"], "--solver-option expects NAME=VALUE"),
])
def test_bad_solver_option_is_refused_before_any_work(argv, message, tmp_path, capsys):
    import tune_lambda
    from _common import run_cli

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: tune_lambda.main([*argv, "--runner", "local", "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_solver_option_exits_2_as_a_subprocess(tmp_path):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "studies/tune_lambda.py", "--solver-option", "nope=1",
                        "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("error: unknown option of solver 'cbo' 'nope'; valid choices: init_points, ")  # cbo: the default
    assert not out.exists()


@pytest.mark.parametrize("flag, message", [
    ("lam=0.01", "NAME=LOW:HIGH"),
    ("mu=0.1:1", "valid choices"),
    ("lam=0.04:0.01", "bad range"),
    ("lam=a:b", "numbers"),
    ("mu=-1:3 --searcher gold --target-mflops 20", "leaves gold's valid values: mu must be >= 0, got -1.0"),
])
def test_bad_range_is_refused_before_anything_is_written(tmp_path, flag, message):
    out = tmp_path / "study"
    flag, *more = flag.split()
    r = subprocess.run([sys.executable, str(ROOT / "studies" / "tune_lambda.py"), "--range", flag, *more,
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_range_narrows_the_space_on_the_searchers_scale():
    import tune_lambda

    config = tune_lambda.config_from_args(tune_lambda.build_parser().parse_args(["--range", "lam=0.01:0.04"]))
    (lam,) = config.space().params
    assert (lam.name, lam.low, lam.high, lam.log) == ("lam", 0.01, 0.04, True)
    assert StudyConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


# -- a folder per run without --out (automl/run_dirs.py) --------------------------------------------------
def test_run_folders_are_new_names_and_latest_follows_the_last(tmp_path):
    from automl.run_dirs import latest_run_dir, link_latest, new_run_dir

    root = tmp_path / "runs"
    with pytest.raises(UsageError, match="continues .*latest, which does not exist"):
        latest_run_dir(root)
    first = new_run_dir(root, now=0)
    assert not root.exists()                       # a name only: the study creates it after its checks
    first.mkdir(parents=True)
    second = new_run_dir(root, now=0)              # the same second: a suffix, not the same folder
    assert second.name == first.name + "-2"
    second.mkdir()
    link_latest(first)
    link_latest(second)
    assert latest_run_dir(root) == second.resolve() and (root / "latest").readlink() == Path(second.name)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text("{}")   # a study written before runs had folders
    assert latest_run_dir(tmp_path / "old") == tmp_path / "old"


def test_main_command_twice_then_resume_the_latest(tmp_path, monkeypatch, capsys):
    import tune_lambda
    from _common import run_cli

    monkeypatch.chdir(tmp_path)
    tiny = ["--runner", "local", "--solver", "random", "--trials", "1", "--fidelity", "1", "--min-fidelity", "1",
            "--data-limit", "64"]
    with pytest.raises(SystemExit) as e:                 # bad input without --out: nothing written
        run_cli(lambda: tune_lambda.main([*tiny, "--solver-option", "nope=1"]))
    assert e.value.code == 2 and not (tmp_path / "runs").exists()
    capsys.readouterr()
    folders = []
    for _ in range(2):
        assert tune_lambda.main(tiny) == 0
        shown = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("study folder: ")]
        assert len(shown) == 1 and shown[0].startswith("study folder: runs/tune-lambda/20")
        folders.append(tmp_path / shown[0].split(": ")[1])
    assert folders[0] != folders[1] and all((f / "study.json").exists() for f in folders)
    assert (tmp_path / "runs" / "tune-lambda" / "latest").resolve() == folders[1].resolve()
    # --resume alone continues the latest run (one more trial), and writes no new folder
    assert tune_lambda.main([*tiny, "--resume", "--trials", "2"]) == 0
    assert f"study folder: {folders[1].relative_to(tmp_path)}" in capsys.readouterr().out
    assert len((folders[1] / "trials.csv").read_text().splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "runs" / "tune-lambda").iterdir()) == sorted(
        [folders[0].name, folders[1].name, "latest"])
    # an explicit --out stays strict
    with pytest.raises(UsageError, match="already holds a study; pass --resume"):
        tune_lambda.main([*tiny, "--out", str(folders[0])])


def test_measure_times_the_delivered_model_and_a_finished_study_can_be_measured_on_resume(tmp_path, capsys):
    """--measure: best/model.onnx timed here after the trials, printed with the outcome, saved as
    best/measured.json and shown in report.html; --resume --measure measures a finished study."""
    import tune_lambda

    tiny = ["--runner", "local", "--solver", "random", "--trials", "1", "--fidelity", "1", "--min-fidelity", "1",
            "--data-limit", "64", "--out", str(tmp_path / "s")]
    assert tune_lambda.main(tiny) == 0
    assert not (tmp_path / "s" / "best" / "measured.json").exists()   # off by default
    capsys.readouterr()
    assert tune_lambda.main([*tiny, "--resume", "--measure"]) == 0
    out = capsys.readouterr().out
    measured = json.loads((tmp_path / "s" / "best" / "measured.json").read_text())
    assert "  measured  best/model.onnx at 32x32 with ONNX Runtime" in out and measured["lines"][0] in out
    assert "not compared with the prediction" in out   # the default profile is Pixel 1's, not this machine
    assert "measured  best/model.onnx at 32x32" in (tmp_path / "s" / "report.html").read_text()
    assert json.loads((tmp_path / "s" / "study.json").read_text())["measure"] is True
