"""Many audits and models around one original: campaigns (the demo is one, over the embedded world's methods)
and their leaderboards, one audit's independent pieces on workers, the worker pools (local processes or Ray) and
the runner that makes an unlearned model with a bundled method."""
