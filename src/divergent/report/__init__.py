"""The study report: the paper's Figures 1-8 and Appendix Table 1 for a zoo, and the five claims' verdicts."""
from .build import SECTIONS, build_report
from .findings import CLAIMS, Evidence, findings_table, make_row, verdict
from .tables import SCHEMAS, ReportTables, read_tables, write_tables

__all__ = ["SECTIONS", "build_report", "CLAIMS", "Evidence", "findings_table", "make_row", "verdict",
           "SCHEMAS", "ReportTables", "read_tables", "write_tables"]
