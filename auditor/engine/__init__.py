"""The audit engine: a plan of attacks and probes, run on the models (checkpointed), scored into results.json.

``plan`` (what runs), ``orchestrator`` (runs it, caching finished pieces), ``attack_runner`` and
``unlearn_runner`` (one attack or one unlearning method, with their caches and records), ``results``
(the results.json record), ``audit`` (one audit to its files), ``demo`` (the embedded world's leaderboard),
``pools`` (where the demo's independent jobs run: local processes or Ray tasks) and ``progress`` (phase lines).
"""
