"""The study report: the paper's Figures 1-8 and Appendix Table 1 for a zoo, and the five claims'
verdicts, rendered from result tables (the findings table comes from divergent.analyses.findings)."""
from .build import SECTIONS, build_report
from .tables import SCHEMAS, ReportTables, read_tables, write_tables

__all__ = ["SECTIONS", "build_report", "SCHEMAS", "ReportTables", "read_tables", "write_tables"]
