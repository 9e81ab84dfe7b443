from obliviate.report.markdown import write_report
from obliviate.report.metrics import write_metrics

__all__ = ["write_metrics", "write_report"]
