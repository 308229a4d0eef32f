"""Helpers for the AgentFabric tool-calling fine-tuning series: one module per stage, used by the notebooks
(``import helpers``; set-up installs this package editable) and by ``python -m helpers <command>``.

- ``environment`` — the machine, the stack, profiles, training/serving precision, run directories
  (``runs/latest-<profile>``), the notebooks' kernel, links to local web pages through a notebook proxy
- ``jsonl`` — every data file read and written one way: strict JSON, atomic writes, outputs never over inputs
- ``models`` — which model each profile fine-tunes, and getting it onto disk
- ``agentfabric`` — the prompt format RolePlay sends, and the evaluation case format (the single source of truth)
- ``convert`` — raw ``ms_agent`` records → AgentFabric training samples
- ``catalog``, ``sandbox``, ``synth`` — the bundled offline tools, the limited runner of model-written Python,
  and the data generator
- ``training``, ``swift_plugin`` — the ``swift sft`` command, its progress and summary; our loss scale and callback
- ``serving`` — merging the LoRA, OpenAI-compatible servers on 127.0.0.1
- ``agent_tools`` — offline tools registered with modelscope-agent, and the real RolePlay loop
- ``playground``, ``agentfabric_app`` — the Gradio page of notebook 04; ModelScope's AgentFabric app against our server
- ``judge`` — THE judge: whether a model output makes the right call (evaluation, preference pairs and rewards
  all ask it)
- ``evaluation`` — metrics, call outcomes, verdicts, comparisons of arms, the written conclusion, and
  predictions cached by content hash
- ``preference`` — notebook 06: the model's own replies sampled through RolePlay, judged, turned into DPO pairs
- ``budget`` — the machine probe and notebook 00's plan: how long each notebook takes here, the recipe scaled to fit
- ``narrate`` — every sentence a notebook says about its run, generated from the run's files; the rule that keeps
  measured figures out of hand-written prose; estimates and time left of long cells
- ``plots``, ``report`` — figures and HTML views; the run report, and the parts of README.md and docs/ generated
  from the committed run summaries
- ``pipeline``, ``bench`` — the notebooks as a batch (``make run``); speed figures (``make bench``)
- ``scripted_server`` — a recording OpenAI-compatible server, to capture RolePlay's requests and to test
"""
