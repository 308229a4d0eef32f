"""Budget: how fast this machine is, how long every notebook of the ``cpu`` recipe will take on it, and the recipe
scaled to a time budget.

The ``cpu`` recipe was tuned on a machine with bf16 matrix units; without them the same recipe runs in fp32 and
takes several times as long. Notebook 00 therefore measures the machine before anything long starts
(:func:`probe`: a transformer-shaped matrix product in fp32 and, where the CPU has bf16 units, in bf16, and a fixed
piece of Python work) and writes a :class:`Plan` into the run directory (``plan.json``):

* the expected seconds of every notebook on *this* machine: each notebook is a fixed part (imports, data, Python
  work: scaled by the Python probe) plus units of model work (a training step, an evaluated case, a sampled turn,
  a preference step, a server start: scaled by the matrix probe of the precision in use), with the seconds of each
  unit measured on a calibration machine (``results/speed-calibration.json``, written by
  ``python -m helpers budget calibrate``);
* where the total exceeds the time budget (:data:`BUDGET_MINUTES`: 30 minutes with bf16 units, 45 without), the
  recipe's knobs (:data:`KNOBS`) scaled down until the estimate fits, driven by the measured speed alone, in two
  stages: first what costs the measurement's precision and not the model (:data:`FIRST_CUT`: fewer evaluation
  cases, no extra early arm, fewer replies per sampled turn), then every knob by one factor, each no lower than
  its floor (training steps, sampled turns and preference steps too).

Notebooks 02, 05 and 06 read their scaled settings from the plan (an explicit notebook parameter still wins) and
print the estimate next to what they measure; the report and the README say what was scaled.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .environment import CPU_BF16_FLAGS, cpu_flags, repo_root
from .jsonl import read_json, write_json

CALIBRATION = repo_root() / 'results' / 'speed-calibration.json'
BUDGET_MINUTES = {'bf16': 30, 'fp32': 45}  # the whole series (make run), by the precision this machine trains in


@dataclass(frozen=True)
class Probe:
    """What :func:`probe` measured: matrix GFLOP/s per precision (all threads torch uses) and Python speed."""
    gflops: dict[str, float]
    python_ops: float  # millions of simple Python operations a second (one thread)
    threads: int
    bf16_units: bool  # the CPU has bf16 matrix instructions (AMX-BF16 or AVX512-BF16)
    seconds: float  # what the probe itself took


def _matmul_gflops(dtype, repeats: int, trials: int = 5) -> float:
    """Median GFLOP/s of a 1024x576 @ 576x1536 product (a 135M model's MLP on 1,024 tokens)."""
    import torch
    a, b = torch.randn(1024, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        rates.append(2 * 1024 * 576 * 1536 * repeats / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def _python_mops(n: int = 300_000, trials: int = 3) -> float:
    """Millions of loop iterations a second of a small fixed piece of Python (dict, string and JSON work: what
    data preparation, tokenizer glue and the agent loop spend their time on)."""
    rates = []
    for _ in range(trials):
        t = time.perf_counter()
        d: dict[str, int] = {}
        for i in range(n):
            k = str(i % 997)
            d[k] = d.get(k, 0) + len(k)
        json.loads(json.dumps(d))
        rates.append(n / (time.perf_counter() - t) / 1e6)
    return statistics.median(rates)


def probe() -> Probe:
    """Measure this machine (about two seconds): fp32 always, bf16 where the CPU has bf16 units."""
    import torch
    start = time.perf_counter()
    bf16 = bool(cpu_flags() & set(CPU_BF16_FLAGS))
    gflops = {'fp32': round(_matmul_gflops(torch.float32, 10), 1)}
    if bf16:
        gflops['bf16'] = round(_matmul_gflops(torch.bfloat16, 20), 1)
    return Probe(gflops, round(_python_mops(), 2), torch.get_num_threads(), bf16, round(time.perf_counter() - start, 2))


# The knobs a plan may scale, per profile: (the recipe's value, the floor below which it is not cut). Scaled together
# by one factor; tiny and gpu runs are not scaled (tiny is fast, a GPU run is not estimated here).
KNOBS: dict[str, dict[str, tuple[int, int]]] = {
    'tiny': {'sft_steps': (12, 12), 'ms_agent_steps': (6, 6), 'early_arm': (1, 1), 'eval_cases': (12, 12),
             'sample_turns': (8, 8), 'samples_per_turn': (2, 2), 'dpo_steps': (4, 4)},
    'cpu': {'sft_steps': (85, 20), 'ms_agent_steps': (20, 6), 'early_arm': (1, 0), 'eval_cases': (150, 40),
            'sample_turns': (120, 24), 'samples_per_turn': (4, 2), 'dpo_steps': (12, 4)},
    'gpu': {'sft_steps': (0, 0), 'ms_agent_steps': (0, 0), 'early_arm': (1, 1), 'eval_cases': (500, 500),
            'sample_turns': (2000, 2000), 'samples_per_turn': (4, 4), 'dpo_steps': (0, 0)},  # 0: one epoch
}
# Cut first, down to these values, before any knob that shapes the model is touched: they widen the intervals of the
# evaluation (150 -> 100 cases: about +-0.10 instead of +-0.08 around a rate of 0.5 on the cases that need a call)
# and drop the extra arm, but leave training, sampling turns and preference steps whole.
FIRST_CUT: dict[str, dict[str, int]] = {'cpu': {'early_arm': 0, 'eval_cases': 100, 'samples_per_turn': 2}}
KNOB_WORDS = {'sft_steps': 'training steps (notebook 02)', 'ms_agent_steps': 'steps of the ms_agent-format model',
              'early_arm': 'the fine-tuned model evaluated after as few steps as the ms_agent-format one (1: yes)',
              'eval_cases': 'held-out cases per model (notebooks 05, 06)', 'sample_turns': 'training turns sampled '
              '(notebook 06)', 'samples_per_turn': 'replies sampled per turn', 'dpo_steps': 'preference steps'}
# The knobs each notebook uses: its first line names only the cuts it is affected by.
NOTEBOOK_KNOBS = {'02_training.ipynb': ('sft_steps', 'ms_agent_steps'),
                  '05_evaluation.ipynb': ('eval_cases', 'early_arm'),
                  '06_preference.ipynb': ('sample_turns', 'samples_per_turn', 'dpo_steps', 'eval_cases')}
NOTEBOOKS = ('00_environment.ipynb', '01_data.ipynb', '02_training.ipynb', '03_serving.ipynb', '04_roleplay.ipynb',
             '05_evaluation.ipynb', '06_preference.ipynb')


def work(settings: dict[str, int]) -> dict[str, dict[str, float]]:
    """Units of model work per notebook for a plan's settings: training steps, evaluated cases per model, sampled
    turns, preference steps (compute: scaled by the matrix probe); training and server starts (scaled by the
    Python probe). Notebook 04 runs six turns for each of two models; notebook 05 evaluates four (the base model,
    the ms_agent-format one, the fine-tuned one after as many steps as that, and after all of them)."""
    n = settings['eval_cases']
    return {
        '02_training.ipynb': {'train_start': 2, 'sft_step': settings['sft_steps'],
                              'ms_agent_step': settings['ms_agent_steps']},
        '03_serving.ipynb': {'server_start': 1},
        '04_roleplay.ipynb': {'server_start': 2, 'case:base': 6, 'case:finetuned': 6},
        '05_evaluation.ipynb': {'server_start': 3 + settings['early_arm'], 'case:base': n, 'case:ms_agent': n,
                                'case:early': n * settings['early_arm'], 'case:finetuned': n},
        '06_preference.ipynb': {'server_start': 2, 'sample_turn': settings['sample_turns'] *
                                settings['samples_per_turn'] / 4, 'train_start': 1, 'dpo_step': settings['dpo_steps'],
                                'case:preference': n},
    }


PYTHON_UNITS = ('train_start', 'server_start')


@dataclass
class Calibration:
    """Seconds of each unit of work and of each notebook's fixed part, measured in one precision on one machine
    (whose probe they are relative to)."""
    precision: str
    probe: dict  # asdict(Probe) of the calibration machine
    units: dict[str, float]  # unit -> seconds (see work())
    fixed: dict[str, float]  # notebook -> seconds that are not units
    source: str  # the run it was measured in, its commit and machine


def load_calibrations(path: str | Path = CALIBRATION) -> dict[str, Calibration]:
    """The committed calibrations by precision ({} when there are none yet)."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return {p: Calibration(**c) for p, c in data.get('precisions', {}).items()}


def unit_seconds(cal: dict[str, Calibration], precision: str, mine: Probe) -> tuple[dict[str, float],
                                                                                    dict[str, float], str]:
    """Seconds per unit and per notebook's fixed part on this machine, and how they were derived.

    With both precisions calibrated, each unit of compute is split in two parts solved from the two measurements:
    matrix products (seconds × GFLOP/s of the precision, the same work in both) and the rest (scaled by the Python
    speed); a bf16 step of the cpu recipe is mostly the rest, so the matrix speed alone would overstate how much
    slower fp32 is. With one precision calibrated: that one, scaled by the probes (a unit of the other precision
    by the matrix throughput of both: an upper bound where the rest is large). Starts and fixed parts scale by the
    Python speed."""
    py = {k: c.probe['python_ops'] / mine.python_ops for k, c in cal.items()}
    if {'bf16', 'fp32'} <= set(cal) and precision in ('bf16', 'fp32'):
        b, f = cal['bf16'], cal['fp32']
        gb, gf = b.probe['gflops']['bf16'], f.probe['gflops']['fp32']
        pb, pf = b.probe['python_ops'], f.probe['python_ops']
        units = {}
        for u in b.units.keys() & f.units.keys():
            if u in PYTHON_UNITS:
                continue
            # tb = M/gb + O/pb and tf = M/gf + O/pf: the matrix work M (GFLOP) and the rest O (M loop steps)
            tb, tf = b.units[u], f.units[u]
            det = (1 / gb) * (1 / pf) - (1 / gf) * (1 / pb)
            m = (tb / pf - tf / pb) / det if det else -1
            o = (tf / gb - tb / gf) / det if det else -1
            if m >= 0 and o >= 0:
                units[u] = m / mine.gflops[precision] + o / mine.python_ops
        c = cal[precision]
        scaled = c.probe['gflops'][precision] / mine.gflops[precision]
        units = {u: units.get(u, s * (py[precision] if u in PYTHON_UNITS else scaled)) for u, s in c.units.items()}
        other = f if precision == 'bf16' else b
        for u in other.units.keys() - c.units.keys():  # a unit the run of this precision did not measure (an arm
            sibling = 'case:finetuned' if u.startswith('case:') else 'sft_step'  # its plan dropped): the other
            units[u] = other.units[u] * units[sibling] / other.units[sibling]  # one's, as its sibling scales
        how = (f'calibrated in bf16 ({b.source}) and fp32 ({f.source}); each unit split into matrix products and '
               'the rest')
        return units, {nb: s * py[precision] for nb, s in c.fixed.items()}, how
    if precision in cal:
        c, how = cal[precision], f'calibrated in {precision} ({cal[precision].source})'
        compute = c.probe['gflops'][precision] / mine.gflops[precision]
    else:
        other = next(iter(cal))
        c = cal[other]
        how = (f'calibrated in {other} ({c.source}) only; {precision} estimated from the matrix throughput of both '
               'precisions')
        compute = c.probe['gflops'][other] / mine.gflops[precision]
    units = {u: s * (py[c.precision] if u in PYTHON_UNITS else compute) for u, s in c.units.items()}
    return units, {nb: s * py[c.precision] for nb, s in c.fixed.items()}, how


def estimate(settings: dict[str, int], units: dict[str, float], fixed: dict[str, float]) -> dict[str, float]:
    """Expected seconds of every notebook for ``settings``."""
    out = {}
    for nb in NOTEBOOKS:
        out[nb] = fixed.get(nb, 0.0) + sum(count * units.get(u, 0.0) for u, count in work(settings).get(nb, {}).items())
    return out


def scale(knobs: dict[str, tuple[int, int]], factor: float) -> dict[str, int]:
    return {k: max(floor, round(ref * factor)) if ref else ref for k, (ref, floor) in knobs.items()}


def _largest_fit(settings_at, cost, budget: float) -> float:
    """The largest factor in [0, 1] whose settings fit the budget (0 when even the smallest does not)."""
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(settings_at(mid)) <= budget else (lo, mid)
    return lo


def fit(knobs: dict[str, tuple[int, int]], first_cut: dict[str, int], cost, budget: float) -> dict[str, int]:
    """The recipe's settings cut to fit ``budget`` (seconds; ``cost(settings)``): the ``first_cut`` knobs first,
    down to their values there; when that is not enough, every knob from there by one factor, down to its floor."""
    reference = scale(knobs, 1.0)
    if cost(reference) <= budget:
        return reference
    first = {k: (ref, first_cut[k]) for k, (ref, _) in knobs.items() if k in first_cut}

    def stage_one(f: float) -> dict[str, int]:
        return {**reference, **scale(first, f)}
    start = stage_one(0.0)  # every first-cut knob at its value there, the rest at the recipe's
    if cost(start) <= budget:
        return stage_one(_largest_fit(stage_one, cost, budget))
    rest = {k: (start[k], floor) for k, (_, floor) in knobs.items()}
    return scale(rest, _largest_fit(lambda g: scale(rest, g), cost, budget))


@dataclass
class Plan:
    """The settings a run uses on this machine and what they will cost (``plan.json`` in the run directory)."""
    profile: str
    precision: str
    settings: dict[str, int]
    reference: dict[str, int]  # the recipe's values of the same knobs
    estimate: dict[str, float] = field(default_factory=dict)  # notebook -> seconds; empty: not estimated
    budget_seconds: float | None = None
    probe: dict | None = None
    how: str = ''  # where the unit costs come from
    unit_seconds: dict[str, float] = field(default_factory=dict)  # seconds per unit of work() on this machine

    def expect(self, unit: str, count: float = 1) -> str:
        """'about N s' (or min) for ``count`` units of work on this machine; '' when not estimated."""
        if unit not in self.unit_seconds:
            return ''
        return f'about {minutes(self.unit_seconds[unit] * count)} on this machine (notebook 00\'s estimate)'

    @property
    def scaled(self) -> dict[str, tuple[int, int]]:
        """Knobs this machine's plan cut: knob -> (recipe value, this run's)."""
        return {k: (self.reference[k], v) for k, v in self.settings.items() if v != self.reference.get(k)}

    @property
    def total(self) -> float:
        return sum(self.estimate.values())

    def cuts(self, notebook: str | None = None) -> list[str]:
        """What the plan cut, in words (``training steps (notebook 02) 85 → 53``): every cut, or those of the
        knobs ``notebook`` uses (:data:`NOTEBOOK_KNOBS`)."""
        mine = NOTEBOOK_KNOBS.get(notebook, ()) if notebook else self.scaled
        return [f'{KNOB_WORDS.get(k, k)} {a} → {b}' for k, (a, b) in self.scaled.items() if k in mine]

    def notebook_line(self, notebook: str) -> str:
        """What notebook 00 expects a notebook to take here, in one line (for its first cell)."""
        if notebook not in self.estimate:
            return f'{notebook}: no estimate for the {self.profile} profile on this machine'
        cut = ', '.join(self.cuts(notebook))
        return (f'{notebook}: expected to take about {minutes(self.estimate[notebook])} on this machine '
                f'({self.precision}; notebook 00\'s plan)' + (f'; scaled to the time budget: {cut}' if cut else ''))

    def training_overrides(self) -> dict:
        """Notebook 02: ``max_steps`` where the plan cut the training steps (else the preset's epoch)."""
        ref, got = self.reference.get('sft_steps'), self.settings.get('sft_steps')
        return {'max_steps': got} if got and ref and got < ref else {}

    def dpo_overrides(self, n_pairs: int, global_batch: int) -> dict:
        """Preference training: one epoch of the pairs, cut to the plan's ``dpo_steps`` when that is fewer."""
        cap = self.settings.get('dpo_steps') or 0
        epoch = -(-n_pairs // max(1, global_batch))
        return {'max_steps': cap} if cap and epoch > cap else {}


def minutes(seconds: float) -> str:
    return f'{seconds / 60:.0f} min' if seconds >= 90 else f'{seconds:.0f} s'


def make_plan(profile: str, precision: str, budget_minutes: float | None = None, measured: Probe | None = None,
              calibration: dict[str, Calibration] | None = None) -> Plan:
    """The plan for ``profile`` on this machine: ``cpu`` is estimated from the probe and the calibration and scaled
    to the budget (by default :data:`BUDGET_MINUTES` of the precision); ``tiny`` and ``gpu`` keep their recipe."""
    knobs = KNOBS[profile]
    reference = scale(knobs, 1.0)
    if profile != 'cpu':
        return Plan(profile, precision, reference, reference)
    measured = measured or probe()
    cal = load_calibrations() if calibration is None else calibration
    if not cal:
        return Plan(profile, precision, reference, reference, probe=asdict(measured),
                    how='no calibration committed (results/speed-calibration.json): not estimated')
    units, fixed, how = unit_seconds(cal, precision, measured)
    budget = 60 * (budget_minutes or BUDGET_MINUTES.get(precision, BUDGET_MINUTES['fp32']))
    settings = fit(knobs, FIRST_CUT.get(profile, {}), lambda s: sum(estimate(s, units, fixed).values()), budget)
    return Plan(profile, precision, settings, reference, estimate(settings, units, fixed), budget, asdict(measured),
                how, {k: round(v, 3) for k, v in units.items()})


def write_plan(run_dir: str | Path, plan: Plan) -> Path:
    path = Path(run_dir) / 'plan.json'
    write_json(path, asdict(plan))
    return path


def load_plan(run_dir: str | Path, profile: str) -> Plan:
    """The run's plan (notebook 00); a run without one (started before plans existed) gets the recipe as it is."""
    path = Path(run_dir) / 'plan.json'
    if path.exists():
        return Plan(**read_json(path))
    reference = scale(KNOBS[profile], 1.0)
    return Plan(profile, 'auto', reference, reference, how='no plan.json in this run: the recipe unscaled')


def describe(plan: Plan) -> str:
    """The plan in a few lines: what the probe measured, the expected total against the budget, what was scaled."""
    lines = []
    if plan.probe:
        g = plan.probe['gflops']
        lines.append(f"This machine: matrix products {g['fp32']:.0f} GFLOP/s in fp32"
                     + (f", {g['bf16']:.0f} in bf16" if 'bf16' in g else ' (no bf16 units: bf16 would be emulated)')
                     + f" on {plan.probe['threads']} threads; Python {plan.probe['python_ops']:.1f} M loop steps/s. "
                     f"The run trains and serves in {plan.precision}.")
    if not plan.estimate:
        lines.append(f'No estimate for the {plan.profile} profile: {plan.how or "its recipe runs as it is"}.')
        return '\n'.join(lines)
    lines.append(f'Expected: about {minutes(plan.total)} for notebooks 00-06, against a budget of '
                 f'{minutes(plan.budget_seconds)} ({plan.how}).')
    if plan.scaled:
        lines.append('To fit the budget, the recipe is scaled on this machine, the evaluation first and the training '
                     'only where that is not enough: ' + '; '.join(plan.cuts())
                     + '. Notebooks 02, 05 and 06 use these values and say so.')
        if plan.total > plan.budget_seconds:
            lines.append('Even at the floors of every setting the estimate is over the budget: expect the time above.')
    else:
        lines.append('The recipe fits the budget as it is: nothing is scaled.')
    return '\n'.join(lines)


def plan_table(plan: Plan) -> list[dict]:
    """One row per notebook: expected minutes on this machine."""
    return [{'notebook': nb, 'expected on this machine': minutes(s)} for nb, s in plan.estimate.items()]


def _steps_and_runtime(train_dir: Path) -> tuple[int, float, float]:
    """(optimizer steps, seconds in the training loop, seconds of the whole command) of a finished training."""
    from .training import read_log_history, steps_done
    history = read_log_history(train_dir)
    runtime = next((float(r['train_runtime']) for r in reversed(history) if 'train_runtime' in r), 0.0)
    wall = read_json(train_dir / 'train_done.json')['wall_seconds']
    return steps_done(history), runtime, wall


def calibrate(run_dir: str | Path) -> Calibration:
    """The unit costs of a finished ``cpu`` run (notebooks 00-06) in its precision: seconds per training step,
    per evaluated case of each model, per sampled turn (normalised to four replies), per preference step, per
    training or server start, and each notebook's remaining (fixed) seconds."""
    run = Path(run_dir)
    plan = Plan(**read_json(run / 'plan.json'))
    timings = {nb: t['seconds'] for nb, t in read_json(run / 'timings.json').items()}
    missing = [nb for nb in NOTEBOOKS if nb not in timings]
    if missing:
        raise ValueError(f'{run} is not a complete run ({", ".join(missing)} missing from timings.json)')
    units, starts = {}, []
    for key, folder in (('sft_step', 'train'), ('ms_agent_step', 'train-ms_agent'), ('dpo_step', 'train-dpo')):
        steps, runtime, wall = _steps_and_runtime(run / folder)
        units[key] = runtime / steps
        starts.append(wall - runtime)
    units['train_start'] = statistics.mean(starts)
    servers = []
    for role in ('base', 'ms_agent', 'early', 'finetuned', 'preference'):
        if role == 'early' and not plan.settings.get('early_arm', 1):
            continue  # the plan dropped this arm: its unit comes from the other precision (unit_seconds)
        m = read_json(run / 'eval' / role / 'metrics.json')
        if m['eval'].get('cached'):
            raise ValueError(f'{run}: the {role} predictions came from the cache; calibrate on a run that made them')
        servers.append(m['eval']['server_start_seconds'])
        units[f'case:{role}'] = (m['eval']['wall_seconds']) / m['n_cases']
    units['server_start'] = statistics.mean(servers)
    pref = read_json(run / 'preference' / 'summary.json')
    units['sample_turn'] = pref['sample_seconds'] / (pref['turns'] * pref['samples_per_turn'] / 4)
    counts = work(plan.settings)
    fixed = {nb: max(0.0, timings[nb] - sum(n * units.get(u, 0.0) for u, n in counts.get(nb, {}).items()))
             for nb in NOTEBOOKS}
    env = read_json(run / 'environment.json')
    hw = env['hardware']
    source = (f'run {run.name}, commit {env.get("commit")}, {hw["cpu_count"]} cores'
              + (f', {hw["cpu"]}' if hw.get('cpu') else ''))
    return Calibration(plan.precision, plan.probe, {k: round(v, 3) for k, v in units.items()},
                       {k: round(v, 1) for k, v in fixed.items()}, source)


def save_calibration(cal: Calibration, path: str | Path = CALIBRATION) -> Path:
    """Add or replace the calibration of ``cal.precision`` in the committed file."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        data = {}
    data.setdefault('precisions', {})[cal.precision] = asdict(cal)
    data['about'] = ('Seconds per unit of work and per notebook\'s fixed part, measured by `python -m helpers budget '
                     'calibrate RUN` on a finished cpu run; helpers.budget scales them by the probes of this machine.')
    write_json(path, data)
    return Path(path)
