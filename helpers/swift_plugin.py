"""ms-swift plugin (``--external_plugins helpers/swift_plugin.py``): our loss scale and a rank checksum callback.

Swift imports this file in every training process, so it depends on swift alone, not on ``helpers``.

* ``--loss_scale agentfabric``: samples are pre-rendered RolePlay requests whose last assistant message is
  either a call (``Action: name\\nAction Input: {json}\\n``) or an answer. The prompt and the observation
  (it sits in the user message, where RolePlay puts it) are masked by the template; this scale weights the
  tool name and the argument JSON by ``AFT_ARGS_WEIGHT`` (default 2.0) — those few tokens decide whether
  a call is right, and a small model otherwise learns the fixed ``Action:`` scaffolding long before it
  learns to copy argument values. The first word of every model output (``Action`` or the answer's first
  word, the token that decides *call or answer*) is weighted by ``AFT_DECISION_WEIGHT`` (default 1.0): one
  token of a long answer otherwise carries a tiny share of the loss. It is cut where the tokenizer's own
  pre-tokenizer cuts (after a run of word characters), so tokenization does not change. Earlier turns kept in
  the history are either masked (``"loss": false``) or, for sessions, trained with the observations
  RolePlay inserted into them masked.
* ``--callbacks aft_rank_checksum``: at the start and the end of training each rank writes a checksum of its
  trainable weights to ``<output_dir>/rank_checksums/rank<N>.json``, so a multi-process run can prove that
  the weights changed and every rank ended with identical ones (real gradient synchronisation).
"""
import hashlib
import json
import os
import re

from swift.callbacks.base import TrainerCallback
from swift.callbacks.mapping import callbacks_map
from swift.loss_scale.base import LossScale
from swift.loss_scale.mapping import loss_scale_map


# What RolePlay inserts between two model outputs of one turn (kept in history transcripts): never trained.
OBSERVATION = re.compile(r'(\nObservation: <result>.*?</result>\nAnswer:)', re.S)
FIRST_WORD = re.compile(r'\s*(?:\w+|[^\w\s]+)')  # ends where a byte-level BPE pre-tokenizer ends a word


class AgentFabricLossScale(LossScale):
    is_binary = False

    def __init__(self, base_strategy='default'):
        super().__init__(base_strategy)
        self.weight = float(os.environ.get('AFT_ARGS_WEIGHT', '2.0'))
        self.decision = float(os.environ.get('AFT_DECISION_WEIGHT', '1.0'))

    def _output(self, text):
        """One model output: a call (name and arguments weighted) or plain text; its first word decides."""
        if not text.startswith('Action: ') or '\nAction Input: ' not in text:
            first = FIRST_WORD.match(text)
            cut = first.end() if first and self.decision != 1.0 else 0
            return [(text[:cut], self.decision), (text[cut:], 1.0)]
        head, rest = text[len('Action: '):].split('\nAction Input: ', 1)
        args, newline, tail = rest.partition('\n')
        return [('Action: ', self.decision), (head, self.weight), ('\nAction Input: ', 1.0), (args, self.weight),
                (newline + tail, 1.0)]

    def get_loss_scale(self, context, **kwargs):
        if not isinstance(context, str):
            return [context], [1.0]
        parts = []
        for i, piece in enumerate(OBSERVATION.split(context)):  # odd pieces are inserted observations
            parts += [(piece, 0.0)] if i % 2 else self._output(piece)
        parts = [(text, w) for text, w in parts if text]
        return [p[0] for p in parts] or [context], [p[1] for p in parts] or [1.0]


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


loss_scale_map['agentfabric'] = AgentFabricLossScale
callbacks_map['aft_rank_checksum'] = RankChecksumCallback
