"""Prometheus metrics of ``fastdpr serve`` (one registry per app, so two apps in a process never mix)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Request latency buckets (seconds): a CPU encoder answers in milliseconds, overload in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Questions per ONNX Runtime call.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Request counts and latency by endpoint and status, batch sizes, queue depth, in-flight requests,
    index reloads."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("fastdpr_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("fastdpr_request_seconds", "Time to answer an HTTP request, by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_questions = Histogram("fastdpr_batch_questions", "Questions per ONNX Runtime batch "
                                         "(> 1 when concurrent requests were batched together).",
                                         buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("fastdpr_batch_seconds", "Time to encode and search one batch.",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("fastdpr_queue_wait_seconds", "Time the oldest request of a batch waited "
                                    "in the queue.", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue = Gauge("fastdpr_queue_questions", "Questions waiting for a batch.", registry=self.registry)
        self.queue.set_function(queue_depth)
        self.in_flight = Gauge("fastdpr_requests_in_flight", "HTTP requests being answered.",
                               registry=self.registry)
        self.truncated = Counter("fastdpr_truncated_questions", "Questions cut to the model's maximum length.",
                                 registry=self.registry)
        self.rejected = Counter("fastdpr_rejected", "Requests refused with 503 because the queue was full.",
                                registry=self.registry)
        self.reloads = Counter("fastdpr_index_reloads", "Reload attempts of the index (SIGHUP or --watch-index), "
                               "by outcome: reloaded, unchanged, failed.", ["outcome"], registry=self.registry)
        self.generation = Gauge("fastdpr_index_generation", "The generation of the index that answers (1 at start, "
                                "+1 per reload).", registry=self.registry)
        self.generation.set(1)

    def observe_batch(self, questions: int, seconds: float, waited: float) -> None:
        """Record one batch (the batcher's observer)."""
        self.batch_questions.observe(questions)
        self.batch_seconds.observe(seconds)
        self.queue_wait.observe(waited)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
