"""Label vocabulary: the eight core task labels and their class order."""

from __future__ import annotations

import enum
from typing import Final


class CoreLabel(enum.StrEnum):
    """One of the eight core task-type labels (v1 label set)."""

    Build = "Build"
    Debug = "Debug"
    Review = "Review"
    Write = "Write"
    ReadResearch = "ReadResearch"
    Communicate = "Communicate"
    Meet = "Meet"
    BreakIdle = "BreakIdle"


LABEL_SET_V1: Final[frozenset[str]] = frozenset(label.value for label in CoreLabel)

CLASS_ORDER: Final[tuple[str, ...]] = tuple(sorted(LABEL_SET_V1))  # of probabilities, classes

CLASS_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(CLASS_ORDER)}

N_CLASSES: Final[int] = len(CLASS_ORDER)

MIXED_UNKNOWN: Final[str] = "Mixed/Unknown"  # the label of a rejected bucket

OUTPUT_LABELS: Final[tuple[str, ...]] = (*CLASS_ORDER, MIXED_UNKNOWN)  # of every label column

LABEL_COLORS: Final[dict[str, str]] = {  # Okabe-Ito (colour-blind safe), grey and white
    "Build": "#0072B2",
    "Debug": "#D55E00",
    "Review": "#56B4E9",
    "Write": "#009E73",
    "ReadResearch": "#F0E442",
    "Communicate": "#E69F00",
    "Meet": "#CC79A7",
    "BreakIdle": "#999999",
    MIXED_UNKNOWN: "#FFFFFF",
}
