from obliviate.report.markdown import write_report

__all__ = ["write_report"]
