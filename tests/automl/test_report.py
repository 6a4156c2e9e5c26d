"""report.html of one study: what it shows, and that it runs in a real browser without a JavaScript error."""
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automl.report import write_report
from automl.results import TrialsTable
from automl.study import StudyConfig, TrialRow
from searchers.cost import count_flops, exact_runtime, load_profile
from searchers.cost.measure import random_arch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def study(tmp_path):
    """Six trials with real architectures and their real runtimes on the profile (no search run)."""
    config = StudyConfig(out=str(tmp_path), solver="random", target=80.0, trials=6, fidelity=2, min_fidelity=1)
    profile, rng = load_profile(config.profile), random.Random(0)
    table = TrialsTable(tmp_path / "trials.csv", ["lam"])
    for i in range(6):
        arch = random_arch(rng, 0.25, 32, se=True)
        ms, acc = exact_runtime(profile, arch), 0.5 + 0.05 * i
        reward = acc * min(1.0, 80.0 / ms)   # Eq. 19
        table.append(TrialRow(trial_id=i, solver="random", params={"lam": 0.002 * 3 ** i}, fidelity=2, seed=0,
                              status="ok", val_acc=acc, test_acc=acc, runtime_ms=ms, flops=float(count_flops(arch)),
                              target=80.0, reward=reward, arch=str(arch), wall_s=3.0))
    table.append(TrialRow(trial_id=6, solver="random", params={"lam": 0.5}, fidelity=1, seed=0, status="failed",
                          error="ValueError: diverged", target=80.0))
    return config, table


def figures(page: str) -> list[dict]:
    """The layouts of the page's plotly figures, read from the embedded Plotly.newPlot("id", data, layout)."""
    dec, out = json.JSONDecoder(), []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page):
        _, end = dec.raw_decode(page, m.end())                        # the traces
        layout, _ = dec.raw_decode(page, page.index("{", end))
        out.append(layout)
    return out


def test_report_shows_the_verdict_first_titled_axes_the_target_and_the_architectures(study, tmp_path):
    config, table = study
    page = write_report(tmp_path / "report.html", table, config).read_text()
    assert page.index("verdict: target 80 ms") < page.index("Plotly.newPlot")   # the verdict on top
    layouts = figures(page)
    titles = [(f["title"]["text"], f["xaxis"]["title"]["text"], f["yaxis"]["title"]["text"]) for f in layouts]
    assert titles[:4] == [
        ("lam vs cost (target 80)", "lam (log scale)", "runtime on pixel1-single-path (ms)"),
        ("lam vs validation accuracy", "lam (log scale)", "validation accuracy (fraction)"),
        ("best reward so far vs search epochs spent", "search epochs spent (cumulative)", "best reward so far (Eq. 19, 0-1)"),
        ("validation accuracy vs cost (Pareto front)", "runtime on pixel1-single-path (ms)", "validation accuracy (fraction)"),
    ]
    assert layouts[2]["yaxis"]["range"] == [0, 1.02]
    # the target as a line on both runtime axes: horizontal in the first, vertical in the fourth
    assert [s["y0"] for s in layouts[0]["shapes"]] == [80.0] and [s["x0"] for s in layouts[3]["shapes"]] == [80.0]
    assert titles[4][0].startswith("architectures: the 20 searchable layers, coloured by runtime on pixel1")
    best = table.best(config.fidelity, config.target, lambda r: r.runtime_ms)
    assert f"delivered (trial {best.trial_id})" in page and f"delivered trial {best.trial_id} (" in page
    assert len(layouts[4]["shapes"]) == 4                                       # the stage boundaries
    assert 'class="dataframe sortable"' in page and "ValueError: diverged" in page


INJECT = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
var _err = console.error; console.error = function () { window.__errors.push(Array.from(arguments).join(' ')); };
window.addEventListener('load', function () {
  setTimeout(function () {
    var th = Array.from(document.querySelectorAll('table.sortable th')).find(function (h) { return h.textContent === 'val_acc'; });
    th.click(); th.click();   // descending
    var col = Array.from(th.parentNode.children).indexOf(th);
    var out = document.createElement('pre'); out.id = 'probe';
    out.textContent = JSON.stringify({errors: window.__errors, plots: document.querySelectorAll('.main-svg').length,
      first: document.querySelector('table.sortable tbody tr').cells[col].textContent});
    document.body.appendChild(out);
  }, 500);
});
</script>"""


def test_report_renders_in_headless_chromium_without_javascript_errors(study, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium)")
    config, table = study
    page = write_report(tmp_path / "report.html", table, config).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + INJECT, 1))
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                        "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, flags=re.S)
    assert m, r.stderr[-2000:]
    got = json.loads(m.group(1).replace("&quot;", '"'))
    assert got["errors"] == [] and got["plots"] >= 5
    assert float(got["first"]) == max(row.val_acc for row in table.rows if row.val_acc is not None)


def test_report_is_rebuilt_from_the_tables_alone(study, tmp_path, capsys):
    import os

    from automl.report import main
    from searchers.errors import UsageError

    config, table = study
    # recorded elsewhere: on a larger machine, from data this one does not have (a study that runs here
    # is still refused for both)
    recorded = {**config.to_json(), "data": str(tmp_path / "gone"), "cpus_per_trial": (os.cpu_count() or 1) + 1.0}
    (tmp_path / "study.json").write_text(json.dumps(recorded))
    with pytest.raises(UsageError, match="exceeds this machine's"):
        StudyConfig.from_json(recorded)
    with pytest.raises(UsageError, match="does not exist"):
        StudyConfig.from_json({**recorded, "cpus_per_trial": 1.0})
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "measured.json").write_text(json.dumps({"lines": ["measured  best/model.onnx at 32x32 ..."]}))
    assert main([str(tmp_path)]) == 0 and capsys.readouterr().out == f"wrote {tmp_path / 'report.html'}\n"
    page = (tmp_path / "report.html").read_text()
    assert figures(page) == figures(write_report(tmp_path / "direct.html", table, config).read_text())
    assert "measured  best/model.onnx at 32x32 ..." in page


@pytest.mark.parametrize("args, message", [
    (["--window-size", "12x16"], "window size must be W,H in pixels"),
    (["--window-size", "50,50"], "at least 100,100"),
    ([], "is not a study folder: no study.json or trials.csv"),
    ([], "nor an experiment's (no experiment.json"),
])
def test_report_command_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys):
    from automl.report import main

    folder = tmp_path / "s"
    folder.mkdir()
    assert main([str(folder), "--screenshot", str(tmp_path / "r.png"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert list(folder.iterdir()) == [] and not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("spec", ["{not json", "[]", '{"target_ms": -1, "searcher": "single-path"}'])
def test_a_corrupt_experiment_json_is_one_line_exit_2(spec, tmp_path, capsys):
    from automl.report import main

    (tmp_path / "experiment.json").write_text(spec)
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "experiment.json: not an experiment this tool wrote" in err[0], err
    assert not (tmp_path / "report.html").exists()


def test_screenshot_without_chromium_is_one_line(study, tmp_path, capsys, monkeypatch):
    from automl import browser
    from automl.report import main

    config, _ = study
    config.save(tmp_path / "study.json")
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    assert main([str(tmp_path), "--screenshot", str(tmp_path / "r.png")]) == 2
    assert "needs headless Chromium and none is on PATH" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


def test_screenshot_of_a_rebuilt_report(study, tmp_path):
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("no chromium installed (Debian: apt-get install chromium)")
    config, _ = study
    config.save(tmp_path / "study.json")
    r = subprocess.run([sys.executable, "-m", "automl.report", str(tmp_path), "--screenshot", str(tmp_path / "r.png"),
                        "--window-size", "400,300"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20]) == 400 and int.from_bytes(png[20:24]) == 300
