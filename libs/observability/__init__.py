"""What a worker tells its operators about itself: Prometheus metrics (``metrics.py``) and
OpenTelemetry spans (``tracing.py``)."""

# libs.bridge first: it imports our modules while it loads, and metrics.py reads its
# protocol, so importing this package first would meet a half-loaded metrics.py.
from .. import bridge as _bridge  # noqa: F401
from .metrics import CONTENT_TYPE, MetricsServer, WorkerMetrics
from .tracing import Tracing

__all__ = ["CONTENT_TYPE", "MetricsServer", "Tracing", "WorkerMetrics"]
