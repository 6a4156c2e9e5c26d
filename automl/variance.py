"""The steps of the variance experiment (Single-Path NAS paper Sec. VII-A, Fig. 8), each a sub-study
folder so that --resume reads finished work back:

  tune/        the outer loop tunes the formulation's hyperparameter toward the target (Eq. 19);
  repeat-NN/   one search at the tuned value per seed (inter-run variance);
  proxy/       each repeat's ConvNet trained from scratch for a few epochs: Fig. 8 compares "(proxy)
               accuracy", and a search's own accuracy is not comparable across formulations (a
               multi-path child inherits weights trained inside a weighted sum of every path);
  intra/       architectures sampled from the best repeat's softmax distribution, each trained briefly
               (intra-run variance; "we pick the Pareto optimal ConvNet out of the 20 ... and we train
               another 20 ConvNets sampled from the softmax distribution").
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from searchers import RunSettings

from .experiments import in_processes, light_trial, run_fixed, run_substudy
from .proxy import load_samples, proxy_train, sample_hook
from .results import write_json
from .reward import Target, reward
from .solvers.base import Proposal
from .solvers.grid import GridSolver
from .study import StudyConfig, TrialRow, cached_task, make_searcher

COLUMNS = ["formulation", "kind", "index", "seed", "params", "status", "error", "val_acc", "test_acc",
           "runtime_ms", "flops", "reward", "arch", "wall_s", "result_dir"]


def tuned_value(tune: StudyConfig | None, *, resume: bool, runner: str,
                on_row: Callable | None = None, on_read_back: Callable | None = None,
                verbose: int = 0) -> tuple[dict | None, float | None]:
    """(best hyperparameters, their reward) of the tuning study; ({}, None) when there is nothing to
    tune; (None, None) when no tuning trial succeeded. `on_row`, `on_read_back`: run_substudy's."""
    if tune is None:
        return {}, None
    table = run_substudy(tune, resume=resume, runner=runner, on_row=on_row, on_read_back=on_read_back,
                         verbose=verbose)
    # the value tune_lambda would deliver (finalize's choice: Eq. 19, ties by closeness to the target)
    best = table.best(tune.fidelity, tune.target, lambda r: tune.target_obj.measure(r.runtime_ms, r.flops))
    return (dict(best.params), best.reward) if best is not None else (None, None)


def _settings(fields: dict, epochs: int, seed: int) -> RunSettings:
    return RunSettings(epochs=epochs, seed=seed, device=fields["device"], batch_size=fields["batch_size"],
                       width=fields["width"], profile=fields["profile"],
                       target_ms=fields["target"] if fields["target_metric"] == "runtime_ms" else None)


def _row(name: str, kind: str, index: int, row: TrialRow) -> dict:
    d = {k: getattr(row, k) for k in COLUMNS if hasattr(row, k)}
    return {**d, "formulation": name, "kind": kind, "index": index, "params": json.dumps(row.params)}


def repeat_config(fields: dict, out: Path, epochs: int, seed: int) -> StudyConfig:
    # solver: any registered name (StudyConfig admits no other); the proposal comes from a GridSolver
    return StudyConfig(**fields, out=str(out), solver="random", trials=1, fidelity=epochs, min_fidelity=epochs,
                       seed=seed)


def inter_runs(name: str, *, searcher: str, params: dict, value: dict, fields: dict, out: Path, epochs: int,
               seeds: list[int], resume: bool, runner: str, samples: int = 0, workers: int = 1,
               on_row: Callable | None = None, on_read_back: Callable | None = None, verbose: int = 0) -> pd.DataFrame:
    """One search per seed at the tuned `value` ({}: a searcher with nothing to tune, run in-process).
    With `samples`, each local search also saves that many architectures sampled from its distribution.
    `workers` searches at once, in processes of the local runner, each with its share of the cores: each
    keeps its seed and folder (float rounding follows the thread count), shown by `on_row` as it finishes."""
    jobs = [dict(searcher=searcher, params=params, value=value, fields=fields, out=Path(out) / f"repeat-{r:02d}",
                 epochs=epochs, seed=seed, resume=resume, runner=runner, samples=samples, verbose=verbose)
            for r, seed in enumerate(seeds)]
    tables = {}
    if workers <= 1:
        for r, job in enumerate(jobs):
            tables[r] = _repeat(**job, on_row=on_row, on_read_back=on_read_back)
    else:
        for r, n_read, table in in_processes(_repeat_job, list(enumerate(jobs)), workers):
            if n_read and on_read_back is not None:
                on_read_back(table.rows[:n_read])
            if on_row is not None:
                for row in table.rows[n_read:]:
                    on_row(row)
            tables[r] = table
    rows = [_row(name, "inter", r, row) for r in sorted(tables) for row in tables[r].rows]
    return pd.DataFrame(rows, columns=COLUMNS)


def _repeat(*, searcher: str, params: dict, value: dict, fields: dict, out: Path, epochs: int, seed: int,
            resume: bool, runner: str, samples: int, verbose: int, on_row: Callable | None = None,
            on_read_back: Callable | None = None):
    """One repeated search (a one-trial sub-study, or a fixed run for a searcher with nothing to tune)."""
    if value:
        cfg = repeat_config(fields, out, epochs, seed)
        trial_fn = functools.partial(light_trial, after=sample_hook(samples)) if samples else None
        return run_substudy(cfg, resume=resume, runner=runner, solver=GridSolver(cfg.space(), [(value, epochs)]),
                            label="repeat", trial_fn=trial_fn, on_row=on_row, on_read_back=on_read_back,
                            verbose=verbose)
    target = Target(value=fields["target"], metric=fields["target_metric"])
    return run_fixed(out, searcher=searcher, searcher_params=params, settings=_settings(fields, epochs, seed),
                     data=fields["data"], data_limit=fields["data_limit"], target=target, seed=seed,
                     resume=resume, on_row=on_row, on_read_back=on_read_back)


def _repeat_job(job: tuple):
    """In a worker process: (index, how many of its table's rows --resume read back, its table)."""
    r, kw = job
    read = []   # the sub-study says what it read back, as it does to on_read_back in one process
    table = _repeat(**kw, on_read_back=read.extend)
    return r, len(read), table


def _distribution_samples(best: pd.Series, fields: dict, epochs: int, n: int) -> list:
    """Samples saved beside the best repeat, or (Ray runs save none) from re-running it in-process:
    on CPU the same seed gives the same search, hence the same distribution."""
    archs = load_samples(best["result_dir"]) if best["result_dir"] else None
    if archs is not None and len(archs) >= n:
        return archs[:n]
    cfg = repeat_config(fields, Path(best["result_dir"] or "."), epochs, int(best["seed"]))
    searcher = make_searcher(cfg, Proposal(trial_id=0, params=json.loads(best["params"]), fidelity=epochs))
    searcher.run()
    return searcher.sample_archs(n, torch.Generator().manual_seed(int(best["seed"])))


def intra_runs(name: str, *, inter: pd.DataFrame, fields: dict, out: Path, epochs: int, n: int,
               proxy_epochs: int, seed: int, resume: bool, workers: int = 1) -> pd.DataFrame:
    """Train `n` architectures sampled from the best repeat's distribution (Eq. 19 picks the best:
    a Pareto-optimal point of accuracy vs cost) for `proxy_epochs` each, seeds seed, seed+1, ...,
    `workers` at once."""
    ok = inter[inter["status"] == "ok"]
    if ok.empty or n == 0:
        return pd.DataFrame(columns=COLUMNS)
    best = ok.loc[ok["reward"].astype(float).idxmax()]
    d = Path(out) / "intra"
    d.mkdir(parents=True, exist_ok=True)
    archs, done, pending = None, {}, {}
    for i in range(n):
        path = d / f"sample-{i:02d}.json"
        if resume and path.exists():
            done[i] = json.loads(path.read_text())
            continue
        archs = archs or _distribution_samples(best, fields, epochs, n)
        pending[i] = dict(path=path, arch=archs[i], name=name, kind="intra", index=i, seed=seed + i,
                          params=best["params"], fields=fields, proxy_epochs=proxy_epochs)
    return pd.DataFrame(_train(done, pending, workers), columns=COLUMNS)


def proxy_runs(name: str, *, inter: pd.DataFrame, fields: dict, out: Path, proxy_epochs: int,
               resume: bool, workers: int = 1) -> pd.DataFrame:
    """Train each successful repeat's ConvNet from scratch for `proxy_epochs` (with the repeat's seed),
    `workers` at once: the "(proxy) accuracy" Fig. 8 compares, the same training for every formulation."""
    from searchers.spaces import parse_arch

    d = Path(out) / "proxy"
    done, pending = {}, {}
    for i, (_, r) in enumerate(inter[inter["status"] == "ok"].iterrows()):
        path = d / f"repeat-{int(r['index']):02d}.json"
        if resume and path.exists():
            done[i] = json.loads(path.read_text())
            continue
        d.mkdir(parents=True, exist_ok=True)
        arch = parse_arch(r["arch"].split(" ", 1)[0], r["arch"])   # a string form opens with its space
        pending[i] = dict(path=path, arch=arch, name=name, kind="proxy", index=int(r["index"]),
                          seed=int(r["seed"]), params=r["params"], fields=fields, proxy_epochs=proxy_epochs)
    return pd.DataFrame(_train(done, pending, workers), columns=COLUMNS)


def _train(done: dict[int, dict], pending: dict[int, dict], workers: int) -> list[dict]:
    """The rows read back (`done`) and those of the `pending` trainings (_proxy_row's arguments), in
    position order. Pending ones train in this process, or `workers` at once in processes with an equal
    share of the cores; each keeps its seed, so a ConvNet is the same either way (up to float rounding
    under another thread count)."""
    if workers <= 1 or len(pending) <= 1:
        trained = {i: _proxy_row(**kw) for i, kw in pending.items()}
    else:
        trained = dict(in_processes(_proxy_job, list(pending.items()), workers))
    rows = {**done, **trained}
    return [rows[i] for i in sorted(rows)]


def _proxy_job(job: tuple) -> tuple[int, dict]:
    """In a worker process: (position, the trained ConvNet's row)."""
    i, kw = job
    return i, _proxy_row(**kw)


def _proxy_row(path: Path, arch, *, name: str, kind: str, index: int, seed: int, params: str, fields: dict,
               proxy_epochs: int) -> dict:
    """Proxy-train `arch` with `seed`; its row (Eq. 19 reward at the experiment's target), saved to `path`."""
    target = Target(value=fields["target"], metric=fields["target_metric"])
    t0 = time.perf_counter()
    m = proxy_train(arch, cached_task(fields["data"], fields["data_limit"]), _settings(fields, proxy_epochs, seed))
    row = {"formulation": name, "kind": kind, "index": index, "seed": seed, "params": params, "status": "ok",
           "error": "", **{k: m[k] for k in ("val_acc", "test_acc", "runtime_ms", "flops", "arch")},
           "reward": reward(m["val_acc"], target.measure(m["runtime_ms"], m["flops"]), target.value),  # Eq. 19
           "wall_s": round(time.perf_counter() - t0, 3), "result_dir": ""}
    write_json(path, row)
    print(f"{name} {kind} {index:02d} (seed {seed}): trained {proxy_epochs} ep  {row['runtime_ms']:.2f} ms  "
          f"val {row['val_acc']:.4f}  {row['wall_s']:.0f}s", flush=True)   # minutes each: show progress
    return row
