"""Helpers for the AgentFabric tool-calling fine-tuning series: one module per pipeline stage.

environment (machine, stack, profiles) · models (getting models) · agentfabric (the prompt format
RolePlay sends, the evaluation case format) · scripted_server (a recording OpenAI-compatible server) ·
agent_tools (offline tools, the real RolePlay loop).
"""
