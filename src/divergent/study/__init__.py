"""The study: one command from a zoo to the paper's figures (config, unit registry, unit graph, cache,
executors, runner)."""
from .config import PRESETS, StudyConfig, load, validate
from .executors import EXECUTORS, InlineExecutor, LocalExecutor, RayExecutor, UnitContext, make_executor
from .graph import Graph, Unit
from .plan import plan, run_study
from .runner import RunSummary, run_graph
from .units import unit

__all__ = ["PRESETS", "StudyConfig", "load", "validate", "EXECUTORS", "InlineExecutor", "LocalExecutor", "RayExecutor",
           "UnitContext", "make_executor", "Graph", "Unit", "unit", "plan", "run_study", "RunSummary", "run_graph"]
