"""Comparative pruning studies: one TOML configuration, one command, one report.

``pyrocompress study [CONFIG.toml]`` trains each (data set, model, seed) once as a
Bayesian network and once as its deterministic twin (and once per distinct training recipe
a method asks for), prunes them by every configured method at every operating point,
records each trial in a resumable results store and writes a ShrinkBench-style report.
See ``docs/studies.md``.

* :mod:`.specs` (the validated configuration), :mod:`.config` (TOML parsing with line numbers);
* :mod:`.plan` (networks and trials), :mod:`.jobs` (training and trial jobs),
  :mod:`.measure` (a trial's metrics), :mod:`.executors` (where jobs run),
  :mod:`.runner` (the driver), :mod:`.store` (the results store), :mod:`.report`.
"""
from .config import StudyConfigError, default_config_text, load_config, parse_config
from .report import write_report
from .runner import StudyResult, plan_trials, run_study
from .specs import StudyConfig
from .store import DIMS, METRICS, ResultsStore, StoreError, read_results

__all__ = [
    "StudyConfig", "StudyConfigError", "default_config_text", "load_config", "parse_config", "write_report",
    "StudyResult", "plan_trials", "run_study", "DIMS", "METRICS", "ResultsStore", "StoreError", "read_results",
]
