"""taskclf: task-type labels and time segments from per-minute activity features."""

__version__ = "0.5.0"
