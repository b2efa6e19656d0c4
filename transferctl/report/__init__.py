"""The report stage: a finished run in, one self-contained HTML page and its numbers out."""

from transferctl.report.build import REPORT, Report, write_report

__all__ = ["REPORT", "Report", "write_report"]
