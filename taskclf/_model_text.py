"""Structural check of a LightGBM model text before LightGBM parses it.

LightGBM's parser trusts its input: some malformed model texts abort the
whole process (an exception escaping its OpenMP loop ends in
``std::terminate``), and a tree whose child or category indices point out
of range would read out of bounds or loop forever when predicting. A
pickle-free bundle directory may come from someone the user does not
trust, so its model file is checked here first, in plain Python: the
layout LightGBM writes (header, ``tree_sizes``, one block per tree, ``end
of trees``) and, in each tree, every array's length, every index's range
and that the nodes form a tree. Only a text that passes is handed to
LightGBM.
"""

from __future__ import annotations

import numpy as np

_HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "max_feature_idx", "tree_sizes")
_INTERNAL_ARRAYS = (
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "internal_value",
    "internal_weight",
    "internal_count",
)
_MAX_TREES = 1_000_000
_MAX_LEAVES = 1 << 17


class ModelTextError(ValueError):
    """The text is not a well-formed LightGBM model (the message says where)."""


def _key_values(lines: list[str], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ModelTextError(f"{where}: line {line[:40]!r} is not key=value")
        if key in values:
            raise ModelTextError(f"{where}: {key!r} appears twice")
        values[key] = value
    return values


def _integer(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ModelTextError(f"{what} is {text[:40]!r}, not an integer") from None
    if not low <= value <= high:
        raise ModelTextError(f"{what} is {value}, outside [{low}, {high}]")
    return value


def _numbers(values: dict[str, str], key: str, n: int, where: str, *, integer: bool) -> np.ndarray:
    if key not in values:
        raise ModelTextError(f"{where}: no {key}")
    fields = values[key].split()
    if len(fields) != n:
        raise ModelTextError(f"{where}: {key} has {len(fields)} values, expected {n}")
    try:
        if integer:
            return np.array([int(v) for v in fields], dtype=np.int64)
        return np.array([float(v) for v in fields], dtype=np.float64)
    except (ValueError, OverflowError):
        raise ModelTextError(f"{where}: {key} holds a value that is not a number") from None


def _check_tree(block: str, index: int, n_features: int) -> None:
    where = f"Tree={index}"
    lines = block.rstrip("\n").split("\n")
    if lines[0] != f"Tree={index}":
        raise ModelTextError(f"{where}: the block starts with {lines[0][:40]!r}")
    values = _key_values(lines[1:], where)
    leaves = _integer(values.get("num_leaves", ""), f"{where} num_leaves", 1, _MAX_LEAVES)
    n_cat = _integer(values.get("num_cat", ""), f"{where} num_cat", 0, max(leaves - 1, 0))
    if values.get("is_linear", "0") != "0":
        raise ModelTextError(f"{where}: linear trees are not taskclf models")
    try:
        float(values.get("shrinkage", ""))
    except ValueError:
        raise ModelTextError(f"{where}: shrinkage is not a number") from None
    if not np.isfinite(_numbers(values, "leaf_value", leaves, where, integer=False)).all():
        raise ModelTextError(f"{where}: a leaf value is not finite")
    _numbers(values, "leaf_count", leaves, where, integer=True)
    if values.get("leaf_weight", "").split():
        _numbers(values, "leaf_weight", leaves, where, integer=False)
    if leaves == 1:
        return
    n = leaves - 1
    arrays = {
        key: _numbers(values, key, n, where, integer=key in _INTEGER_ARRAYS)
        for key in _INTERNAL_ARRAYS
    }
    if np.isnan(arrays["threshold"]).any():
        raise ModelTextError(f"{where}: a threshold is NaN")
    feature = arrays["split_feature"]
    if feature.min() < 0 or feature.max() >= n_features:
        raise ModelTextError(f"{where}: a split feature lies outside [0, {n_features - 1}]")
    decision = arrays["decision_type"]
    if decision.min() < 0 or decision.max() > 15 or ((decision >> 2) & 3).max() > 2:
        raise ModelTextError(f"{where}: a decision type is not one LightGBM writes")
    # Children: an internal node i points to later internal nodes (> i) or
    # to leaves (~leaf); every node but the root and every leaf is pointed
    # to exactly once, so the nodes form one tree (no cycle, no orphan).
    children = np.concatenate([arrays["left_child"], arrays["right_child"]])
    parents = np.concatenate([np.arange(n), np.arange(n)])
    internal = children >= 0
    if children.min() < -leaves or children.max() > n - 1:
        raise ModelTextError(f"{where}: a child index lies outside the tree")
    if np.any(children[internal] <= parents[internal]):
        raise ModelTextError(f"{where}: a child points back up the tree")
    if not np.array_equal(np.sort(children[internal]), np.arange(1, n)) or not np.array_equal(
        np.sort(~children[~internal]), np.arange(leaves)
    ):
        raise ModelTextError(f"{where}: the nodes do not form one tree")
    categorical = (decision & 1) == 1
    if n_cat:
        bounds = _numbers(values, "cat_boundaries", n_cat + 1, where, integer=True)
        if bounds[0] != 0 or np.any(np.diff(bounds) < 1) or bounds[-1] > 1 << 20:
            raise ModelTextError(f"{where}: cat_boundaries do not delimit the categories")
        _numbers(values, "cat_threshold", int(bounds[-1]), where, integer=True)
    slots = arrays["threshold"][categorical]
    if slots.size and (
        n_cat == 0 or np.any(slots != np.floor(slots)) or slots.min() < 0 or slots.max() >= n_cat
    ):
        raise ModelTextError(f"{where}: a categorical split names no category set")


_INTEGER_ARRAYS = frozenset(
    {"split_feature", "decision_type", "left_child", "right_child", "internal_count"}
)


def check_model_text(text: str, n_classes: int) -> None:
    """Raise :class:`ModelTextError` unless ``text`` is a well-formed LightGBM model.

    Parameters
    ----------
    text : str
        The model file's content.
    n_classes : int
        Classes the model must have (trees per iteration).
    """
    if not text.isascii():
        raise ModelTextError("the model text holds non-ASCII characters")
    head, sep, rest = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != "tree":
        raise ModelTextError("no LightGBM model header")
    header = _key_values(lines[1:], "header")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise ModelTextError(f"header: no {', '.join(missing)}")
    _integer(header["num_class"], "num_class", n_classes, n_classes)
    per_iteration = _integer(
        header["num_tree_per_iteration"], "num_tree_per_iteration", n_classes, n_classes
    )
    n_features = _integer(header["max_feature_idx"], "max_feature_idx", 0, 1 << 20) + 1
    for key in ("feature_names", "feature_infos"):
        if len(header.get(key, "").split()) != n_features:
            raise ModelTextError(f"header: {key} does not list {n_features} features")
    sizes = header["tree_sizes"].split()
    if not sizes or len(sizes) % per_iteration or len(sizes) > _MAX_TREES:
        raise ModelTextError("header: tree_sizes does not list whole iterations of trees")
    position = 0
    for index, size in enumerate(sizes):
        length = _integer(size, f"tree_sizes[{index}]", 1, len(rest))
        block = rest[position : position + length]
        if len(block) < length:
            raise ModelTextError(f"Tree={index}: the text ends inside the tree")
        _check_tree(block, index, n_features)
        position += length
    if not rest[position:].startswith("end of trees\n"):
        raise ModelTextError("no 'end of trees' after the last tree")
