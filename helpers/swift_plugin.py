"""ms-swift plugin (``--external_plugins helpers/swift_plugin.py``): our loss scale and a rank checksum callback.

Swift imports this file in every training process, so it depends on swift alone, not on ``helpers``.

* ``--loss_scale agentfabric``: samples are pre-rendered RolePlay requests whose last assistant message is
  either a call (``Action: name\\nAction Input: {json}\\n``) or an answer. The prompt and the observation
  (it sits in the user message, where RolePlay puts it) are masked by the template; this scale weights the
  tool name and the argument JSON by ``AFT_ARGS_WEIGHT`` (default 2.0) — those few tokens decide whether
  a call is right, and a small model otherwise learns the fixed ``Action:`` scaffolding long before it
  learns to copy argument values. The first token of every model output (``Action`` or the answer's first
  token, the one that decides *call or answer*) is weighted by ``AFT_DECISION_WEIGHT`` (default 1.0): one
  token of a long answer otherwise carries a tiny share of the loss. The character after each top-level
  argument value (``,``: another argument follows; the closing ``}``: the call ends) is weighted by
  ``AFT_ARG_END_WEIGHT`` (default 1.0): that token decides whether an optional parameter is added or left out,
  and whether the JSON is closed. Earlier turns kept in the history are either masked (``"loss": false``)
  or, for sessions, trained with the observations RolePlay inserted into them masked. The weights are given per
  token of the whole output, tokenized once with the template's tokenizer (a token that straddles two pieces
  takes the larger weight): cutting the text into pieces that ms-swift tokenizes one by one would change the
  tokens (``': '`` + ``'get'`` instead of ``': get'``, and the end of turn written in letters), which
  tests/test_training.py rules out against ms-swift's default.
* ``--callbacks aft_rank_checksum``: at the start and the end of training each rank writes a checksum of its
  trainable weights to ``<output_dir>/rank_checksums/rank<N>.json``, so a multi-process run can prove that
  the weights changed and every rank ended with identical ones (real gradient synchronisation).
* ``--callbacks aft_keep_steps``: a checkpoint is also saved at each step listed in ``AFT_KEEP_STEPS`` (comma
  separated), and its model files are hard-linked into ``<output_dir>/step-<N>`` (no copy, and kept when the
  checkpoint itself is rotated away): a model trained exactly N steps of this run, to compare with another
  model trained N steps (notebook 05's fair version of the guide's experiment).
"""
import hashlib
import json
import os
import re

from swift.callbacks.base import TrainerCallback
from swift.callbacks.mapping import callbacks_map
from swift.loss_scale.base import LossScale
from swift.loss_scale.mapping import loss_scale_map
from swift.template import ContextType, Template


# What RolePlay inserts between two model outputs of one turn (kept in history transcripts): never trained.
OBSERVATION = re.compile(r'(\nObservation: <result>.*?</result>\nAnswer:)', re.S)
FIRST_WORD = re.compile(r'\s*(?:[^\w\s]?\w+|[^\w\s]+)')  # a word, or a run of punctuation
CALL = re.compile(r'Action:(.*?)\nAction Input:([^\n]*)', re.S)  # a call: its name and its argument line


def _argument_ends(args):
    """Positions in an argument line of the ``,`` after each top-level value and of the closing ``}``
    (none where the line is not a JSON object)."""
    ends, depth, in_string, escaped = [], 0, False, False
    for i, ch in enumerate(args):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == '\\', ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in '{[':
            depth += 1
        elif ch in '}]':
            depth -= 1
            if depth == 0 and ch == '}':
                return ends + [i]
        elif ch == ',' and depth == 1:
            ends.append(i)
    return []


class AgentFabricLossScale(LossScale):
    is_binary = False

    def __init__(self, base_strategy='default'):
        super().__init__(base_strategy)
        self.tokenizer = None  # the template's, set when the template first asks for its loss scale
        self.weight = float(os.environ.get('AFT_ARGS_WEIGHT', '2.0'))
        self.decision = float(os.environ.get('AFT_DECISION_WEIGHT', '1.0'))
        self.arg_end = float(os.environ.get('AFT_ARG_END_WEIGHT', '1.0'))

    def _output(self, text):
        """One model output as (text, weight, decides) pieces: a call (name and arguments weighted) or plain
        text; the piece that ``decides`` (call or answer) starts it."""
        call = CALL.match(text)
        if call is None:
            first = FIRST_WORD.match(text)
            cut = first.end() if first else 0
            return [(text[:cut], 1.0, True), (text[cut:], 1.0, False)]
        name, args = call.groups()
        pieces, start = [], 0
        for end in _argument_ends(args):
            pieces += [(args[start:end], self.weight, False), (args[end], max(self.weight, self.arg_end), False)]
            start = end + 1
        pieces.append((args[start:], self.weight, False))
        return [('Action:', 1.0, True), (name, self.weight, False), ('\nAction Input:', 1.0, False), *pieces,
                (text[call.end():], 1.0, False)]

    def _tokens(self, parts):
        """``parts`` as token ids of their whole text, grouped by weight. The token of the first character
        of a deciding piece weighs ``decision``; any other token the largest weight of its characters."""
        text = ''.join(t for t, _, _ in parts)
        char_weight = []
        for t, w, decides in parts:
            lead = len(t) - len(t.lstrip()) if decides else -1
            char_weight += [self.decision if i == lead else w for i in range(len(t))]
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        groups, weights = [], []
        for token, (start, end) in zip(enc['input_ids'], enc['offset_mapping']):
            w = max(char_weight[start:max(end, start + 1)] or [1.0])  # an empty span: the character it sits on
            if weights and weights[-1] == w:
                groups[-1].append(token)
            else:
                groups.append([token])
                weights.append(w)
        return groups, weights

    def _inner_call(self, context, context_type, query, loss, loss_scale, is_last_round):
        # Only a model output is weighted piece by piece. The template's end of turn (SUFFIX, e.g.
        # '<|im_end|>') reaches get_loss_scale too: it weighs 1, whole (cut as text, it was once trained as
        # letters and the model never ended its turn).
        if context_type != ContextType.RESPONSE and loss_scale is None:
            loss_scale = 1.0
        return super()._inner_call(context, context_type, query, loss, loss_scale, is_last_round)

    def get_loss_scale(self, context, **kwargs):
        if not isinstance(context, str):
            return [context], [1.0]
        parts = []
        for i, piece in enumerate(OBSERVATION.split(context)):  # odd pieces are inserted observations
            parts += [(piece, 0.0, False)] if i % 2 else self._output(piece)
        parts = [p for p in parts if p[0]]
        if not parts:
            return [context], [1.0]
        if getattr(self.tokenizer, 'is_fast', False):
            return self._tokens(parts)
        # no tokenizer with offsets: text pieces (neighbours of equal weight joined), the deciding one a word
        texts, weights = [], []
        for t, w, decides in parts:
            w = self.decision if decides else w
            if weights and weights[-1] == w:
                texts[-1] += t
            else:
                texts.append(t)
                weights.append(w)
        return texts, weights


def _loss_scale_with_tokenizer(template):
    """ms-swift's ``Template.loss_scale``, handing our loss scale the template's tokenizer."""
    scale = _template_loss_scale(template)
    if isinstance(scale, AgentFabricLossScale) and scale.tokenizer is None:
        scale.tokenizer = template.tokenizer
    return scale


_template_loss_scale = Template.loss_scale.fget
Template.loss_scale = property(_loss_scale_with_tokenizer)


class RankChecksumCallback(TrainerCallback):

    @staticmethod
    def _checksum(model):
        digest, n = hashlib.sha256(), 0
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.requires_grad:
                digest.update(name.encode())
                digest.update(p.detach().float().cpu().numpy().tobytes())
                n += p.numel()
        return digest.hexdigest(), n

    def _write(self, args, state, model, when):
        sha, n = self._checksum(model or self.trainer.model)
        rank = int(os.environ.get('RANK', '0'))
        out = os.path.join(args.output_dir, 'rank_checksums')
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f'rank{rank}.json')
        record = json.load(open(path)) if when == 'end' and os.path.exists(path) else {}
        record.update({'rank': rank, 'world_size': int(os.environ.get('WORLD_SIZE', '1')), 'trainable_params': n,
                       f'sha256_{when}': sha, 'global_step': state.global_step})
        with open(path, 'w') as f:
            json.dump(record, f)

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(args, state, kwargs.get('model'), 'begin')

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state, kwargs.get('model'), 'end')


class KeepStepsCallback(TrainerCallback):
    OPTIMIZER_FILES = ('optimizer.pt', 'scheduler.pt', 'scaler.pt')  # training state: not needed to serve

    @staticmethod
    def _steps():
        return {int(s) for s in os.environ.get('AFT_KEEP_STEPS', '').split(',') if s.strip().isdigit()}

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self._steps():
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.global_step not in self._steps() or int(os.environ.get('RANK', '0')) != 0:
            return
        src = os.path.join(args.output_dir, f'checkpoint-{state.global_step}')
        dst = os.path.join(args.output_dir, f'step-{state.global_step}')
        if not os.path.isdir(src) or os.path.isdir(dst):
            return
        tmp = dst + '.tmp'
        os.makedirs(tmp, exist_ok=True)
        for name in os.listdir(src):
            path = os.path.join(src, name)
            if os.path.isfile(path) and name not in self.OPTIMIZER_FILES and not name.startswith('rng_state'):
                os.link(path, os.path.join(tmp, name))
        os.rename(tmp, dst)


loss_scale_map['agentfabric'] = AgentFabricLossScale
callbacks_map['aft_rank_checksum'] = RankChecksumCallback
callbacks_map['aft_keep_steps'] = KeepStepsCallback
