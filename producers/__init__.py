"""Producers: the job message contract (v1), JobProducer with admission control, the produce CLI."""

from producers.contract import JobMessage, Rejection, RejectReason, parse_record
from producers.errors import Backpressure, ProducerError

__all__ = [
    "Backpressure",
    "JobMessage",
    "ProducerError",
    "RejectReason",
    "Rejection",
    "parse_record",
]
