"""The audit engine: run -> judge -> record.

``plan`` (what runs, and the adaptive searches), ``orchestrator`` (runs it, caching finished ``pieces``),
``attack_runner`` (one attack, with its cache and record), ``early_stop``, ``adaptive`` (the searches' cross-fitted
choice), ``cells`` and ``judge`` (scores, plan, policy and baseline -> one judgement), ``records`` and ``results``
(results.json), ``findings``, ``audit`` (one audit to its files) and ``progress`` (phase lines). The demo, its
leaderboard, the worker pools and the unlearning runner are ``auditor.campaign``.
"""
