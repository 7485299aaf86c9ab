"""The study: one command from a zoo to the paper's figures (config, unit graph, cache, executors, runner)."""
from .config import PRESETS, load, validate
from .executors import EXECUTORS, InlineExecutor, LocalExecutor, RayExecutor, UnitContext, make_executor
from .graph import Graph, Unit
from .plan import plan, run_study
from .runner import RunSummary, run_graph

__all__ = ["PRESETS", "load", "validate", "EXECUTORS", "InlineExecutor", "LocalExecutor", "RayExecutor",
           "UnitContext", "make_executor", "Graph", "Unit", "plan", "run_study", "RunSummary", "run_graph"]
