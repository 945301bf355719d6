"""Prometheus metrics. Labels name routes by their template and never a participant."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "backchannel_relay_requests",
            "HTTP requests by route template and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "backchannel_relay_request_seconds",
            "Request latency by route template",
            ["route"],
            registry=self.registry,
        )
        self.envelopes_accepted = Counter(
            "backchannel_relay_envelopes_accepted",
            "Envelopes durably stored",
            registry=self.registry,
        )
        self.envelopes_delivered = Counter(
            "backchannel_relay_envelopes_pushed",
            "Envelopes pushed over WebSockets",
            registry=self.registry,
        )
        self.websockets = Gauge(
            "backchannel_relay_websockets", "Open WebSocket connections", registry=self.registry
        )
