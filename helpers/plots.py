"""Plots: the matplotlib figures and small HTML views the notebooks and the run report show.

Every function returns a figure (or an HTML string) and draws nothing by itself, so a notebook displays
it and the report embeds it. Figures use the non-interactive defaults and close nothing the caller owns.
"""
from __future__ import annotations

import html
import time
from collections import Counter
from typing import Mapping, Sequence

import matplotlib.pyplot as plt

BEFORE, AFTER = '#9aa5b1', '#2f7ed8'


def panels(texts: Mapping[str, str], notes: Mapping[str, str] | None = None) -> str:
    """Texts in columns, whitespace kept, each under its title and above its note (e.g. a verdict), as HTML
    for a notebook's ``display(HTML(...))``: one column per arm compares models side by side."""
    width = 100 // max(1, len(texts))
    cell = ('<td style="vertical-align:top;width:{}%;text-align:left"><b>{}</b><pre style="white-space:pre-wrap;'
            'font-size:11px;background:#f6f8fa;padding:6px;margin:4px 0;max-height:28em;overflow:auto">{}</pre>{}</td>')
    return ('<table style="width:100%;table-layout:fixed"><tr>' + ''.join(
        cell.format(width, html.escape(title), html.escape(text),
                    f'<div style="font-size:12px">{html.escape((notes or {}).get(title, ""))}</div>')
        for title, text in texts.items()) + '</tr></table>')


def side_by_side(left: str, right: str, left_title: str = 'before', right_title: str = 'after') -> str:
    """Two texts in columns (see :func:`panels`)."""
    return panels({left_title: left, right_title: right})


class LiveText:
    """A model's stream shown as one growing text in one output (not one line per chunk), in a notebook:
    ``view = LiveText('base: ')``, then ``on_chunk=view.add`` and ``view.close()``."""

    def __init__(self, title: str = '', every: float = 0.3):
        from IPython.display import display
        self.title, self.text, self.every, self._shown = title, '', every, 0.0
        self._handle = display(self._data(), raw=True, display_id=True)

    def _data(self) -> dict:
        return {'text/plain': self.title + self.text}

    def add(self, chunk: str) -> None:
        self.text += chunk
        if time.time() - self._shown >= self.every:
            self._handle.update(self._data(), raw=True)
            self._shown = time.time()

    def close(self) -> None:
        self._handle.update(self._data(), raw=True)


def highlight_trained(pieces: Sequence[tuple[str, float]]) -> str:
    """Text pieces with their loss weight: 0 grey, 1 green, above 1 bold dark green (HTML)."""
    out = []
    for text, w in pieces:
        style = ('color:#888' if w == 0 else 'background:#c8f7c5' if w <= 1 else
                 'background:#6fd36a;font-weight:bold')
        out.append(f'<span style="{style}" title="loss weight {w:g}">{html.escape(text)}</span>')
    legend = ('<div style="font-size:11px;margin-bottom:4px"><span style="color:#888">grey: no loss</span> · '
              '<span style="background:#c8f7c5">green: trained</span> · '
              '<span style="background:#6fd36a;font-weight:bold">bold: trained with extra weight</span></div>')
    return legend + '<pre style="white-space:pre-wrap;font-size:11px">' + ''.join(out) + '</pre>'


def bar_counts(groups: Mapping[str, Mapping[str, int] | Counter], title: str = '', ncols: int = 2):
    """One horizontal bar chart per group of counts."""
    n = len(groups)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, max(2.5, 0.22 * max(len(c) for c in groups.values())
                                                                      + 1) * nrows), squeeze=False)
    for ax, (name, counts) in zip(axes.flat, groups.items()):
        items = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        ax.barh([str(k) for k, _ in items][::-1], [v for _, v in items][::-1], color=AFTER)
        ax.set_title(name)
        ax.tick_params(axis='y', labelsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis('off')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def length_histogram(lengths: Mapping[str, Sequence[int]], max_length: int, title: str = 'tokens per sample'):
    """Overlaid histograms of sample lengths per group, with the ``max_length`` cut marked."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    top = max((max(v) for v in lengths.values() if len(v)), default=max_length)
    bins = range(0, max(top, max_length) + 64, 64)
    for name, vals in lengths.items():
        if len(vals):
            cut = sum(v > max_length for v in vals) / len(vals)
            ax.hist(vals, bins=bins, alpha=0.6, label=f'{name} (n={len(vals)}, {cut:.0%} over max_length)')
    ax.axvline(max_length, color='red', linestyle='--', label=f'max_length = {max_length}')
    ax.set_xlabel('tokens (prompt + target)')
    ax.set_ylabel('samples')
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping]):
    """Loss and token accuracy over steps, train and eval, from ms-swift's ``logging.jsonl``."""
    def series(key):
        pts = [(int(str(r['global_step/max_steps']).split('/')[0]), float(r[key])) for r in history
               if key in r and 'global_step/max_steps' in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, (train_key, eval_key, label) in zip(axes, [('loss', 'eval_loss', 'loss'),
                                                       ('token_acc', 'eval_token_acc', 'token accuracy')]):
        for key, style, name in ((train_key, '-', 'train'), (eval_key, 'o--', 'eval')):
            x, y = series(key)
            if x:
                ax.plot(x, y, style, label=name)
        ax.set_xlabel('step')
        ax.set_title(label)
        ax.legend()
    fig.tight_layout()
    return fig


def metrics_bars(results: Mapping[str, Mapping], metrics: Sequence[str], title: str = ''):
    """Grouped bars of several arms (e.g. base vs fine-tuned) with Wilson intervals where known; each metric
    is labelled with its direction (↑ higher is better, ↓ lower is better)."""
    import numpy as np
    from .evaluation import METRICS
    names = list(results)
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(names))
    colors = [BEFORE, AFTER, '#f28e2b', '#59a14f']
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(metrics)), 3.8))
    for i, name in enumerate(names):
        m = results[name]
        vals = [m.get(k) if m.get(k) is not None else 0 for k in metrics]
        err = [[0] * len(metrics), [0] * len(metrics)]
        for j, k in enumerate(metrics):
            ci = (m.get('ci95') or {}).get(k)
            if ci and m.get(k) is not None:
                err[0][j], err[1][j] = max(0, m[k] - ci[0]), max(0, ci[1] - m[k])
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, yerr=err, capsize=3, label=name,
                      color=colors[i % len(colors)])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.02, f'{v:.2f}', ha='center', fontsize=7)
    ax.set_xticks(x, [METRICS[k].heading if k in METRICS else k.replace('_', ' ')
                      for k in metrics], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.legend()
    ax.set_title((title + '\n' if title else '') + '↑ higher is better · ↓ lower is better', fontsize=9)
    fig.tight_layout()
    return fig



def cell_text(value) -> str:
    """One table cell as text: a count as a whole number (``150``, never ``150.00``), any other number to two
    decimals, nothing as ``–``."""
    import numbers
    if value is None or isinstance(value, float) and value != value:
        return '–'
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f'{float(value):.2f}'


def table(df, max_width: str = '36em'):
    """A DataFrame with left-aligned, wrapped text, bounded column widths (prompts and model outputs stay
    readable instead of stretching one column across the page), counts as whole numbers (a column of floats that
    are all whole, such as counts with a gap, too) and other numbers to two decimals; display it as the cell's
    last value."""
    import pandas as pd
    df = df.copy()
    for col in df.columns:
        values = df[col].dropna()
        if pd.api.types.is_float_dtype(df[col]) and len(values) and (values == values.round()).all():
            df[col] = df[col].astype('Int64')
    props = [('text-align', 'left'), ('vertical-align', 'top'), ('white-space', 'pre-wrap'),
             ('max-width', max_width), ('overflow-wrap', 'anywhere')]
    return df.style.set_table_styles([{'selector': 'td, th', 'props': props}]).format(cell_text, na_rep='–')


def pair_difference(chosen: str, rejected: str, title: str = '') -> str:
    """A preference pair as HTML: the two replies one above the other, the part where they differ highlighted
    (green in the chosen reply, red in the rejected one)."""
    from .preference import difference
    start, a, b, end = difference(chosen, rejected)
    esc = html.escape
    row = ('<div style="font-family:monospace;font-size:12px;white-space:pre-wrap;margin:2px 0"><b>{}</b> {}'
           '<span style="background:{}">{}</span>{}</div>')
    return (f'<div style="margin:8px 0"><div style="font-size:12px;color:#555">{esc(title)}</div>'
            + row.format('chosen  ', esc(start), '#c6efce', esc(a), esc(end))
            + row.format('rejected', esc(start), '#ffc7ce', esc(b), esc(end)) + '</div>')


def preference_curves(history: Sequence[Mapping]):
    """DPO's curves from ms-swift's ``logging.jsonl``: loss, the reward margin (chosen − rejected) and the reward
    accuracy (share of pairs whose chosen reply gets the higher reward), train and held-back pairs."""
    def series(key):
        pts = [(int(str(r['global_step/max_steps']).split('/')[0]), float(r[key])) for r in history
               if key in r and 'global_step/max_steps' in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, (key, label) in zip(axes, [('loss', 'loss'), ('rewards/margins', 'reward margin (chosen − rejected)'),
                                       ('rewards/accuracies', 'reward accuracy')]):
        for k, style, name in ((key, '-', 'train'), (f'eval_{key}', 'o--', 'held-back pairs')):
            x, y = series(k)
            if x:
                ax.plot(x, y, style, label=name)
        ax.set_xlabel('step')
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
