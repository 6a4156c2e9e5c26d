"""The verdict a study ends with: did it deliver what was asked, and if not, why and what to do.

`make_verdict(table, config)` is pure (no I/O): it reads the trials table and returns a frozen
`Verdict`, whose `lines` are printed by studies/tune_lambda.py, shown at the top of report.html and
saved with the rest of it as verdict.json in the study folder (automl/tuning.py: finalize).

  * met: the delivered trial's cost R lies within 5 % under the target, RT*(1 - BAND) <= R <= RT;
  * accuracy vs cost: the validation accuracy of the delivered trial (when under the target and not
    the smallest network; else the most accurate other trial, under the target where there is one)
    against the smallest network's, with the standard error of the difference (automl.results.diff_se: paired on the shared
    validation images where recorded). "grew" / "fell" when the difference exceeds one SE, else "flat":
    with flat accuracy Eq. 19 (no reward for using the budget below the target) has no peak at the
    target, and no solver can be expected to land there;
  * advice when missed: the trials bracketing the target and their hyperparameters (narrow the range
    there or run more trials), bounds to move when every trial is on one side, and the task to change
    when accuracy is flat.
Trials at full fidelity are analysed (all successful ones when none is at full fidelity).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .results import TrialsTable, correctness, diff_se
from .study import StudyConfig, TrialRow

BAND = 0.05   # the goal: deliver within 5 % of the target, at or under it


@dataclass(frozen=True, kw_only=True)
class Neighbour:
    """A trial named in the verdict: its id, cost R and hyperparameters."""
    trial: int
    measure: float
    val_acc: float
    params: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Growth:
    """Validation accuracy of a larger network minus the smallest network's, with its standard error."""
    larger: Neighbour
    smallest: Neighbour
    diff: float
    se: float
    paired: bool            # SE from per-image correctness (else the unpaired fallback)
    trend: str              # "grew" | "flat" | "fell": |diff| within one SE is "flat"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    target: float
    unit: str                                   # "ms" or "MFLOPs"
    band: tuple[float, float]                   # [RT*(1 - BAND), RT]
    met: bool
    delivered: Neighbour | None = None
    distance_pct: float | None = None           # 100*(R - RT)/RT: negative under the target
    trials_ok: int = 0                          # successful trials analysed (full fidelity)
    under_target: int = 0                       # ... of them with R <= RT
    in_band: int = 0                            # ... of them within the band
    below: Neighbour | None = None              # the largest R <= RT (nearest the target from below)
    above: Neighbour | None = None              # the smallest R > RT (nearest from above)
    growth: Growth | None = None
    advice: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _neighbour(r: TrialRow, measure) -> Neighbour:
    return Neighbour(trial=r.trial_id, measure=measure(r), val_acc=r.val_acc, params=dict(r.params))


def _fmt_params(p: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:.4g}" for k, v in p.items())


def make_verdict(table: TrialsTable, config: StudyConfig, best: TrialRow | None = None) -> Verdict:
    t = config.target_obj
    rt, unit = config.target, ("ms" if config.target_metric == "runtime_ms" else "MFLOPs")
    measure = lambda r: t.measure(r.runtime_ms, r.flops or 0.0)
    band = (rt * (1 - BAND), rt)
    q = lambda x: f"{x:.2f} ms" if unit == "ms" else f"{x:.4g} MFLOPs"   # a cost with its unit
    if best is None:
        best = table.best(config.fidelity, rt, measure)
    ok = [r for r in table.rows if r.status == "ok" and r.reward is not None]
    trials = [r for r in ok if r.fidelity >= config.fidelity] or ok
    if best is not None and not any(r is best for r in trials):
        trials.append(best)   # delivered from a lower fidelity: the only trial meeting the target
    nb = lambda r: _neighbour(r, measure)
    if best is None:
        line = f"verdict: target {rt:g} {unit} missed: no trial succeeded"
        advice = ("read the errors in trials.csv",)
        return Verdict(target=rt, unit=unit, band=band, met=False, advice=advice,
                       lines=(line, *(f"  advice: {a}" for a in advice)))

    r_best = measure(best)
    met = band[0] <= r_best <= band[1]
    under = [r for r in trials if measure(r) <= rt]
    over = [r for r in trials if measure(r) > rt]
    in_band = [r for r in trials if band[0] <= measure(r) <= band[1]]
    below = max(under, key=lambda r: (measure(r), r.reward, -r.trial_id), default=None)
    above = min(over, key=lambda r: (measure(r), -r.reward, r.trial_id), default=None)
    growth = _growth(trials, best, measure, rt)
    v = dict(target=rt, unit=unit, band=band, met=met, delivered=nb(best),
             distance_pct=100.0 * (r_best - rt) / rt, trials_ok=len(trials), under_target=len(under),
             in_band=len(in_band), below=nb(below) if below else None, above=nb(above) if above else None,
             growth=growth)

    advice = []
    space = config.space()
    ranges = ", ".join(f"{p.name} in [{p.low:.4g}, {p.high:.4g}]" for p in space.params)
    if not met:
        if len(trials) > 1 and len({round(measure(r), 6) for r in trials}) == 1:
            advice.append(f"every trial found the same cost ({q(r_best)}): the hyperparameter did not move the "
                          f"architecture in {config.fidelity} search epochs; search longer (--fidelity)")
        if not under:
            advice.append(f"every trial is over the target (the smallest: {q(measure(above))} at "
                          f"{_fmt_params(above.params)}): the cost penalty never got strong enough; raise the "
                          f"upper bound of the range (now {ranges}; --range NAME=LOW:HIGH)")
        elif not over and not in_band:
            advice.append(f"every trial is more than {BAND:.0%} under the target (the largest: "
                          f"{q(measure(below))} at {_fmt_params(below.params)}): lower the lower bound of "
                          f"the range (now {ranges}; --range NAME=LOW:HIGH) so larger networks are tried")
        elif not in_band:
            lo_hi = {k: tuple(sorted((below.params[k], above.params[k]))) for k in below.params}
            advice.append(f"no trial landed in [{band[0]:.4g}, {band[1]:.4g}] {unit}; trials {above.trial_id} "
                          f"({q(measure(above))}) and {below.trial_id} ({q(measure(below))}) "
                          f"bracket the target: run more trials, or narrow the range to theirs ("
                          + " ".join(f"--range {k}={a:.4g}:{b:.4g}" for k, (a, b) in lo_hi.items()) + ")")
        else:
            ids = ", ".join(str(r.trial_id) for r in in_band)
            advice.append(f"trial(s) {ids} landed in the band but were less accurate than the delivered one "
                          f"by more than one standard error: repeat searches near "
                          f"{_fmt_params(in_band[0].params)} (other seeds) or search longer (more epochs)")
        if growth is not None and growth.trend != "grew":
            advice.append("validation accuracy does not grow with capacity on this task, so Eq. 19 (no reward "
                          "for using the budget below the target) has no peak at the target: use a task where "
                          "capacity matters (e.g. --data cifar10:DIR or an ImageFolder)")

    word = "met" if met else "missed"
    lines = [f"verdict: target {rt:g} {unit} {word}: delivered {q(r_best)} (trial {best.trial_id}), "
             f"{v['distance_pct']:+.1f} % from the target (met: {band[0]:.4g}-{band[1]:.4g} {unit})"]
    full = " at full fidelity" if len(trials) < len(ok) else ""
    lines.append(f"  trials: {len(trials)} successful{full}, {len(under)} at or under the target, "
                 f"{len(in_band)} in the band")
    if growth is not None:
        g = growth
        word = {"grew": f"grew by {g.diff:.4f} ± {g.se:.4f}", "fell": f"fell by {-g.diff:.4f} ± {g.se:.4f}",
                "flat": f"flat within noise ({g.diff:+.4f} ± {g.se:.4f})"}[g.trend]
        lines.append(f"  accuracy vs cost: val {g.larger.val_acc:.4f} at {q(g.larger.measure)} (trial "
                     f"{g.larger.trial}) vs {g.smallest.val_acc:.4f} at {q(g.smallest.measure)} (trial "
                     f"{g.smallest.trial}, the smallest): {word} ({'paired' if g.paired else 'unpaired'} SE)")
    else:
        lines.append("  accuracy vs cost: no trial larger than the smallest network to compare with")
    lines += [f"  advice: {a}" for a in advice]
    return Verdict(**v, advice=tuple(advice), lines=tuple(lines))


def _growth(trials: list[TrialRow], best: TrialRow, measure, rt: float) -> Growth | None:
    """The delivered trial (when under the target and not the smallest), else the most accurate other
    trial under the target (else of all), against the smallest network."""
    smallest = min(trials, key=lambda r: (measure(r), -r.val_acc, r.trial_id))
    others = [r for r in trials if r is not smallest and measure(r) > measure(smallest)]
    if not others:
        return None
    if any(r is best for r in others) and measure(best) <= rt:
        larger = best
    else:
        pick = [r for r in others if measure(r) <= rt] or others
        larger = max(pick, key=lambda r: (r.val_acc, measure(r), -r.trial_id))
    diff = larger.val_acc - smallest.val_acc
    se = diff_se(larger, smallest)
    ca, cb = correctness(larger), correctness(smallest)
    paired = ca is not None and cb is not None and len(ca) == len(cb)
    trend = "grew" if diff > se else "fell" if diff < -se else "flat"
    return Growth(larger=_neighbour(larger, measure), smallest=_neighbour(smallest, measure), diff=diff, se=se, paired=paired, trend=trend)
