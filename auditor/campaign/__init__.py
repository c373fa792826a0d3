"""Many audits and models around one original: the demo over the embedded world's methods and its leaderboard,
the worker pools (local processes or Ray) and the runner that makes an unlearned model with a bundled method."""
