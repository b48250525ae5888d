"""Auto-tuning with evidence: TTL, L1 size and eviction policy, tier promotion and
the semantic base threshold, changed one experiment at a time and rolled back when
the numbers say a change hurt.  Eviction policy and L1 size are decided by shadow
simulation of a spatially sampled trace of recent L1 lookups; TTL by misses that
follow an expiry; the semantic threshold by reported false hits, never looser than
the calibrated setting the user chose.

    from rag_cache_plugin.analytics import CacheAnalytics
    from rag_cache_plugin.tuning import CacheTuner, TuningBounds
    tuner = CacheTuner(cache, CacheAnalytics(cache), strategy="balanced",
                       bounds=TuningBounds(max_l1_entries=50_000, max_ttl=86_400))
    tuner.analyze_tuning_need().reasons      # what the rules see now
    tuner.apply_tuning()                     # close a window and act on it
    tuner.start()                            # ... or every interval, in a thread
"""

from ._tuning.bounds import TuningBounds
from ._tuning.engine import CacheTuner
from ._tuning.history import Decision, TuningHistory, default_history_path
from ._tuning.knobs import Change
from ._tuning.loop import TuningReport
from ._tuning.need import Finding, TuningNeed
from ._tuning.rules import ACTIONS, DEFAULT_RULES, TARGETS, Condition, TuningRule, load_rules
from ._tuning.shadow import ShadowReport, run_shadow
from ._tuning.strategies import STRATEGIES, ActionStats, Learner, Strategy
from ._tuning.window import SIGNAL_NAMES

__all__ = [
    "ACTIONS",
    "DEFAULT_RULES",
    "SIGNAL_NAMES",
    "STRATEGIES",
    "TARGETS",
    "ActionStats",
    "CacheTuner",
    "Change",
    "Condition",
    "Decision",
    "Finding",
    "Learner",
    "ShadowReport",
    "Strategy",
    "TuningBounds",
    "TuningHistory",
    "TuningNeed",
    "TuningReport",
    "TuningRule",
    "default_history_path",
    "load_rules",
    "run_shadow",
]
