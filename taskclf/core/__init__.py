"""Core vocabulary: labels, defaults, feature schemas and UTC time."""
