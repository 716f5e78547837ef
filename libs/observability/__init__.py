"""What a worker tells its operators about itself: Prometheus metrics (``metrics.py``)."""

from .metrics import CONTENT_TYPE, MetricsServer, WorkerMetrics

__all__ = ["CONTENT_TYPE", "MetricsServer", "WorkerMetrics"]
