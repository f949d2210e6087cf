"""Tests of taskclf.taxonomy: configuration values, YAML files, the resolver
and the TaxonomyMapper pipeline stage."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ENTRY_POINTS, refused, via_batch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline

import taskclf._io
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN, CoreLabel
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    MissingFileError,
    ProbabilityShapeError,
    ReaderError,
    TaxonomyError,
)
from taskclf.taxonomy import (
    FALLBACK_BUCKET_NAME,
    MAX_BUCKETS,
    MAX_TAXONOMY_BYTES,
    TaxonomyAdvanced,
    TaxonomyBucket,
    TaxonomyConfig,
    TaxonomyDisplay,
    TaxonomyMapper,
    TaxonomyReject,
    TaxonomyResolver,
    TaxonomyResult,
    default_taxonomy,
    load_taxonomy,
    round_like_python,
    save_taxonomy,
    taxonomy_from_dict,
    taxonomy_to_dict,
)

DOCS_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "taxonomy.yaml"
V04 = Path(__file__).resolve().parent / "data" / "v04"
A = TaxonomyBucket("A", ["Build"])


def _config(*buckets: tuple[str, list[str]], **kwargs: object) -> TaxonomyConfig:
    return TaxonomyConfig([TaxonomyBucket(name, labels) for name, labels in buckets], **kwargs)  # type: ignore[arg-type]


def _row(**values: float) -> np.ndarray:
    """A probability row in class order from keyword values (others 0)."""
    return np.array([values.get(label, 0.0) for label in CLASS_ORDER])


# ---------------------------------------------------------------------------
# Configuration values: every rule, its error and its words
# ---------------------------------------------------------------------------

REFUSED_VALUES = {
    "empty name": (lambda: TaxonomyBucket("", ["Build"]), "bucket '': name must not be empty"),
    "blank name": (lambda: TaxonomyBucket("  ", ["Build"]), "name must not be empty"),
    "name not text": (
        lambda: TaxonomyBucket(3, ["Build"]),
        "bucket: name must not be empty (text with a non-space character), got int 3",
    ),
    "labels as text": (lambda: TaxonomyBucket("C", "Build"), "core_labels must be a list"),
    "no labels": (lambda: TaxonomyBucket("C", []), "bucket 'C': core_labels must not be empty"),
    "unknown label": (
        lambda: TaxonomyBucket("C", ["Build", "Cod"]),
        "Unknown core label 'Cod' in bucket 'C' (core_labels)",
    ),
    "label not text": (lambda: TaxonomyBucket("C", [1]), "Unknown core label 1"),
    "repeated label": (lambda: TaxonomyBucket("C", ["Build"] * 2), "lists 'Build' more than once"),
    "bad colour": (
        lambda: TaxonomyBucket("C", ["Build"], color="#12345"),
        "Invalid hex color '#12345' in bucket 'C' (color); expected format #RRGGBB",
    ),
    "colour not text": (lambda: TaxonomyBucket("C", ["Build"], color=0), "Invalid hex color 0"),
    "description": (lambda: TaxonomyBucket("C", ["Build"], description=1), "description"),
    "display flag": (
        lambda: TaxonomyDisplay(show_core_labels="yes"),
        "display: show_core_labels must be true or false, got str 'yes'",
    ),
    "display view": (
        lambda: TaxonomyDisplay(default_view="both"),
        "default_view must be 'mapped' or 'core', got str 'both'",
    ),
    "colour theme": (lambda: TaxonomyDisplay(color_theme=""), "color_theme must not be empty"),
    "mixed label": (
        lambda: TaxonomyReject(mixed_label_name=""),
        "reject: mixed_label_name must not be empty",
    ),
    "reports flag": (
        lambda: TaxonomyReject(include_rejected_in_reports=1),
        "include_rejected_in_reports must be true or false",
    ),
    "aggregation": (
        lambda: TaxonomyAdvanced(probability_aggregation="mean"),
        "'sum' or 'max', got str 'mean'",
    ),
    "weights not a mapping": (
        lambda: TaxonomyAdvanced(reweight_core_labels=[("Build", 1.0)]),
        "reweight_core_labels must map core labels to weights",
    ),
    "weighted unknown label": (
        lambda: TaxonomyAdvanced(reweight_core_labels={"Coding": 2.0}),
        "Unknown core label 'Coding' in reweight_core_labels",
    ),
    "weight of text": (
        lambda: TaxonomyAdvanced(reweight_core_labels={"Build": "2"}),
        "Reweight for 'Build' must be > 0 (a finite number) in reweight_core_labels (advanced)",
    ),
    "no buckets": (lambda: TaxonomyConfig([]), "buckets must not be empty"),
    "dicts for buckets": (
        lambda: TaxonomyConfig([{"name": "A"}]),
        "must be TaxonomyBucket values (taxonomy_from_dict builds them",
    ),
    "duplicate names": (
        lambda: _config(("A", ["Build"]), ("B", ["Meet"]), ("A", ["Debug"]), ("B", ["Write"])),
        "Duplicate bucket names: 'A', 'B'",
    ),
    "too many buckets": (
        lambda: TaxonomyConfig([A] * (MAX_BUCKETS + 1)),
        f"at most {MAX_BUCKETS} buckets",
    ),
    "Other with uncovered labels": (
        lambda: _config(("Other", ["Build"])),
        "'Other' is reserved for core labels no bucket lists (BreakIdle, ",
    ),
    "mixed label is a bucket": (
        lambda: _config(("Coding", ["Build"]), reject=TaxonomyReject(mixed_label_name="Coding")),
        "mixed_label_name 'Coding' is also a bucket name",
    ),
    "mixed label is Other": (
        lambda: _config(("C", ["Build"]), reject=TaxonomyReject(mixed_label_name="Other")),
        "mixed_label_name 'Other'",
    ),
    "schema version": (
        lambda: TaxonomyConfig([A], label_schema_version="labels_v9"),
        "taxonomy: label_schema_version must be 'labels_v1', got str 'labels_v9'",
    ),
    "empty version": (lambda: TaxonomyConfig([A], version=""), "version must not be empty"),
    "empty user": (lambda: TaxonomyConfig([A], user_id=" "), "user_id must not be empty"),
    "section type": (
        lambda: TaxonomyConfig([A], display={"default_view": "core"}),
        "taxonomy: display must be a TaxonomyDisplay, got dict",
    ),
}


@pytest.mark.parametrize(("make", "words"), REFUSED_VALUES.values(), ids=REFUSED_VALUES.keys())
def test_each_rule_refuses_naming_where_field_and_value(make, words):
    error = refused(make, TaxonomyError, words)
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("value", [0, 0.0, -1, float("inf"), float("nan"), True, 10**400])
def test_weights_must_be_finite_and_positive(value):
    refused(
        lambda: TaxonomyAdvanced(reweight_core_labels={"Meet": 1, "Build": value}),
        TaxonomyError,
        "Reweight for 'Build' must be > 0",
    )


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True, 10**400])
def test_min_confidence_must_be_a_number_in_0_1(value):
    refused(
        lambda: TaxonomyAdvanced(min_confidence_for_mapping=value),
        TaxonomyError,
        "min_confidence_for_mapping must be a number in [0, 1]",
    )


@settings(max_examples=200, deadline=None)
@given(
    name=st.one_of(st.text(max_size=3000), st.integers(), st.none()),
    color=st.one_of(st.text(max_size=3000), st.from_regex(r"#[0-9A-Fa-f]{6}", fullmatch=True)),
    labels=st.lists(st.one_of(st.sampled_from(CLASS_ORDER), st.text(max_size=3000)), max_size=9),
)
def test_any_bucket_is_accepted_by_the_rules_or_refused_with_a_short_message(name, color, labels):
    valid = (
        isinstance(name, str)
        and bool(name.strip())
        and re.fullmatch(r"#[0-9A-Fa-f]{6}", color) is not None
        and 0 < len(labels) == len(set(labels))
        and set(labels) <= set(CLASS_ORDER)
    )
    try:
        bucket = TaxonomyBucket(name, labels, color=color)
    except TaxonomyError as exc:
        assert not valid
        assert len(str(exc)) < 400
    else:
        assert valid
        assert bucket.core_labels == tuple(labels)


def test_values_are_frozen_converted_comparable_and_revalidated_by_evolve():
    bucket = TaxonomyBucket("Coding", ["Build", "Debug"])
    assert bucket == TaxonomyBucket("Coding", ("Build", "Debug"), "#808080", "")
    assert hash(bucket) == hash(TaxonomyBucket("Coding", ("Build", "Debug")))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        bucket.name = "x"  # type: ignore[misc]
    assert attrs.evolve(bucket, core_labels=["Meet"]).core_labels == ("Meet",)
    refused(lambda: attrs.evolve(bucket, core_labels=["Nope"]), TaxonomyError, "'Nope'")
    assert TaxonomyAdvanced(min_confidence_for_mapping=1).min_confidence_for_mapping == 1.0
    a = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2}))
    b = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2.0}))
    assert a == b and hash(a) == hash(b)
    assert {a, b, attrs.evolve(a, user_id="alice")} == {a, attrs.evolve(b, user_id="alice")}


def test_weights_are_a_plain_mapping_as_in_taskclf_04():
    given = {"Write": 2, "Build": 0.5}
    weights = TaxonomyAdvanced(reweight_core_labels=given).reweight_core_labels
    assert type(weights) is dict and weights == {"Write": 2.0, "Build": 0.5}
    given["Write"] = 9  # a copy was stored
    assert weights["Write"] == 2.0
    assert TaxonomyAdvanced(reweight_core_labels=None).reweight_core_labels == {}


def test_fallback_bucket_gathers_uncovered_labels_last():
    config = _config(("Coding", ["Debug", "Build"]), ("Talk", ["Meet"]))
    assert FALLBACK_BUCKET_NAME == "Other"
    assert config.bucket_names == ("Coding", "Talk", "Other")
    other = config.resolved_buckets[-1]
    assert other.core_labels == ("BreakIdle", "Communicate", "ReadResearch", "Review", "Write")
    assert config.buckets == config.resolved_buckets[:2]
    # Overlaps are allowed; no Other when all is covered, so a bucket may take the name.
    assert _config(("C", ["Build"]), ("F", ["Build", "Write"])).bucket_names[-1] == "Other"
    labels = list(CLASS_ORDER)
    assert _config(("C", labels[:4]), ("Other", labels[4:])).bucket_names == ("C", "Other")


def test_default_taxonomy_is_one_bucket_per_core_label_in_core_label_order():
    config = default_taxonomy()
    assert config.bucket_names == tuple(label.value for label in CoreLabel)
    assert config.bucket_names[:3] == ("Build", "Debug", "Review")
    assert all(b.core_labels == (b.name,) and type(b.name) is str for b in config.buckets)
    assert config.buckets[0].description == "Core label: Build"


def test_validation_is_linear_and_the_bucket_count_bounded():
    # Quadratic duplicate checks took seconds here; the limit stops 16,000 before any check.
    many = [TaxonomyBucket(f"B{i}", [CLASS_ORDER[i % 8]]) for i in range(MAX_BUCKETS)]
    assert len(TaxonomyConfig(many).bucket_names) == MAX_BUCKETS
    refused(lambda: TaxonomyConfig(many * 16), TaxonomyError, f"at most {MAX_BUCKETS}")
    data = {"buckets": [{"name": f"B{i}", "core_labels": ["Build"]} for i in range(16_000)]}
    refused(lambda: taxonomy_from_dict(data), TaxonomyError, "at most 1000 buckets, got 16000")


# ---------------------------------------------------------------------------
# Plain dicts and YAML files
# ---------------------------------------------------------------------------


@st.composite
def taxonomy_configs(draw: st.DrawFn, max_buckets: int = 10) -> TaxonomyConfig:
    n_buckets = draw(st.integers(1, max_buckets))
    labels = st.lists(st.sampled_from(CLASS_ORDER), min_size=1, max_size=8, unique=True)
    buckets = [TaxonomyBucket(f"B{i}", draw(labels)) for i in range(n_buckets)]
    weights = draw(
        st.dictionaries(
            st.sampled_from(CLASS_ORDER),
            st.one_of(st.floats(1e-3, 1e3), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
            max_size=8,
        )
    )
    advanced = TaxonomyAdvanced(
        probability_aggregation=draw(st.sampled_from(["sum", "max"])),
        reweight_core_labels=weights,
    )
    return TaxonomyConfig(buckets, advanced=advanced)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(config=taxonomy_configs())
def test_dict_and_file_round_trips(config, tmp_path):
    assert taxonomy_from_dict(taxonomy_to_dict(config)) == config
    path = save_taxonomy(config, tmp_path / "sub" / "t.yaml")
    assert load_taxonomy(path) == config == load_taxonomy(str(path))
    assert os.listdir(path.parent) == ["t.yaml"]  # no temporary left over


def test_file_layout_is_taskclf_04s(tmp_path):
    config = TaxonomyConfig(
        [TaxonomyBucket("Réunions", ["Meet", "Build"], color="#ABCDEF", description="x")],
        version="2.1",
        user_id="u7",
        display=TaxonomyDisplay(True, "core"),
        reject=TaxonomyReject("Unsure", True),
        advanced=TaxonomyAdvanced("max", 0.7, {"Write": 1.25}),
    )
    data = yaml.safe_load(save_taxonomy(config, tmp_path / "t.yaml").read_text(encoding="utf-8"))
    assert list(data) == [
        "version", "label_schema_version", "user_id", "display", "reject", "buckets", "advanced",
    ]  # fmt: skip
    assert list(data["buckets"][0]) == ["name", "description", "core_labels", "color"]
    assert data["buckets"][0]["core_labels"] == ["Meet", "Build"]
    assert data["version"] == "2.1" and data["advanced"]["reweight_core_labels"] == {"Write": 1.25}
    assert load_taxonomy(tmp_path / "t.yaml") == config


def test_plain_data_defaults_nulls_and_numeric_versions():
    one = [{"name": "A", "core_labels": ["Build"], "color": None}]
    config = taxonomy_from_dict({"version": None, "display": None, "buckets": one})
    assert config == TaxonomyConfig([A])
    assert taxonomy_from_dict({"version": 2, "buckets": one}).version == "2"
    assert taxonomy_from_dict({"version": 1.5, "buckets": one}).version == "1.5"


BAD_DICTS = {
    "no buckets": ({}, "missing required key 'buckets'"),
    "unknown key": (
        {"buckets": [], "colour": 1},
        r"unknown key\(s\) 'colour'; allowed keys: buckets, version, label_schema_version, ",
    ),
    "buckets not a list": ({"buckets": {"name": "A"}}, "buckets must be a list"),
    "bucket not a mapping": ({"buckets": ["A"]}, r"buckets\[0\] must be a mapping"),
    "bucket without labels": ({"buckets": [{"name": "A"}]}, "missing required key"),
    "unknown bucket key": (
        {"buckets": [{"name": "A", "core_labels": ["Build"], "colour": "#000000"}]},
        r"buckets\[0\]: unknown key\(s\) 'colour'",
    ),
    "unknown label in the second bucket": (
        {"buckets": [{"name": "A", "core_labels": ["Build"]}, {"name": "B", "core_labels": ["X"]}]},
        r"buckets\[1\]: Unknown core label 'X' in bucket 'B'",
    ),
    "section not a mapping": ({"buckets": [], "display": "dark"}, "display must be a mapping"),
    "unknown section key": (
        {"buckets": [], "advanced": {"aggregation": "max"}},
        r"advanced: unknown key\(s\) 'aggregation'",
    ),
    "boolean version": (
        {"buckets": [{"name": "A", "core_labels": ["Build"]}], "version": True},
        "version must not be empty",
    ),
}


@pytest.mark.parametrize(("data", "message"), BAD_DICTS.values(), ids=BAD_DICTS.keys())
def test_bad_plain_data(data, message):
    with pytest.raises(TaxonomyError, match=message):
        taxonomy_from_dict(data)


def test_the_docs_example_loads_and_is_the_one_the_docs_show():
    page = (DOCS_EXAMPLE.parent.parent / "predict.md").read_text(encoding="utf-8")
    assert f"```yaml\n{DOCS_EXAMPLE.read_text(encoding='utf-8')}```" in page
    config = load_taxonomy(DOCS_EXAMPLE)
    assert config.bucket_names == ("Coding", "Docs & research", "People", "Other")
    assert config.resolved_buckets[-1].core_labels == ("BreakIdle",)
    assert config.advanced.reweight_core_labels == {"Review": 1.5}


def test_save_replaces_a_file_and_a_failed_save_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "t.yaml"
    path.write_text("old", encoding="utf-8")
    save_taxonomy(default_taxonomy(), path)
    assert load_taxonomy(path) == default_taxonomy()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(taskclf._io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_taxonomy(TaxonomyConfig([A]), path)
    assert os.listdir(tmp_path) == ["t.yaml"]
    assert load_taxonomy(path) == default_taxonomy()


GOOD = "buckets:\n  - name: Coding\n    core_labels: [Build, Debug]\n"
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
) + "buckets: *h\n"  # fmt: skip
"""347 bytes standing for 9**8 (43 million) values."""
TAXONOMY_FILES = {
    "an unknown core label": (
        "buckets:\n  - name: Coding\n    core_labels: [Build, Coding]\n",
        TaxonomyError,
        ("Unknown core label 'Coding' in bucket 'Coding'",),
    ),
    "a lower-case core label": (GOOD.replace("Build", "build"), TaxonomyError, ("'build'",)),
    "Mixed/Unknown as a core label": (
        GOOD.replace("Build", "Mixed/Unknown"),
        TaxonomyError,
        ("'Mixed/Unknown'",),
    ),
    "a bad colour": (GOOD + "    color: red\n", TaxonomyError, ("Invalid hex color 'red'",)),
    "two buckets of one name": (
        GOOD + GOOD.replace("buckets:\n", ""),
        TaxonomyError,
        ("Duplicate bucket names: 'Coding'",),
    ),
    "no buckets": ("version: 1\n", TaxonomyError, ("'buckets'",)),
    "an unknown key": (GOOD + "colour_theme: dark\n", TaxonomyError, ("'colour_theme'",)),
    "labels as text": (GOOD.replace("[Build, Debug]", "Build"), TaxonomyError, ("must be a list",)),
    "a list at the top": ("- Build\n- Debug\n", TaxonomyError, ("mapping", "list")),
    "an empty file": ("# nothing\n", TaxonomyError, ("the file is empty",)),
    "invalid YAML": (
        "buckets: [\n  - name: {\n",
        ReaderError,
        ("not valid YAML", "line 2, column 3"),
    ),
    "a negative weight": (
        GOOD + "advanced:\n  reweight_core_labels: {Build: -1}\n",
        TaxonomyError,
        ("Reweight for 'Build' must be > 0", "-1"),
    ),
    "nested aliases": (BILLION_LAUGHS, ReaderError, ("aliases (*a) are not allowed", "line 2")),
    "a merge key": (
        "base: &b {core_labels: [Build]}\nbuckets:\n  - {<<: *b, name: A}\n",
        ReaderError,
        ("aliases (*b) are not allowed",),
    ),
    "a 5000-digit number": (GOOD + "version: " + "9" * 5000 + "\n", ReaderError, ("unusable",)),
    "a nesting bomb": ("buckets: " + "[" * 5000 + "]" * 5000, ReaderError, ("deeper than 20",)),
}


@pytest.mark.parametrize(("text", "error", "words"), TAXONOMY_FILES.values(), ids=TAXONOMY_FILES)
def test_taxonomy_file_is_refused_naming_the_file(text, error, words, tmp_path):
    path = tmp_path / "my taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    message = str(refused(lambda: load_taxonomy(path), error, str(path), *words))
    assert len(message) < 600


def test_a_missing_file_is_taskclfs_error_and_a_file_not_found_error(tmp_path):
    error = refused(lambda: load_taxonomy(tmp_path / "nope.yaml"), MissingFileError, "nope.yaml")
    assert isinstance(error, FileNotFoundError) and isinstance(error, ReaderError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_only_regular_files_of_bounded_size_are_read(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # opening it for reading must not hang
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")  # reading it would never end
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" * MAX_TAXONOMY_BYTES, encoding="utf-8")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    for path, words in [
        (fifo, "not a regular file"),
        (zero, "not a regular file"),
        (tmp_path, "not a regular file"),
        (big, f"too large ({len(GOOD) + MAX_TAXONOMY_BYTES} bytes; at most 1048576)"),
        (binary, "not UTF-8"),
    ]:
        refused(lambda path=path: load_taxonomy(path), ReaderError, path.name, words)


# ---------------------------------------------------------------------------
# The mapping rules
# ---------------------------------------------------------------------------


def reference_bucket_probs(config: TaxonomyConfig, p: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The rules for one row as taskclf 0.4 computes them (members in class-index order)."""
    buckets = [(b.name, list(b.core_labels)) for b in config.resolved_buckets]
    probs = np.asarray(p, dtype=np.float64).copy()
    if config.advanced.reweight_core_labels:
        w = np.ones(len(CLASS_ORDER))
        for label, weight in config.advanced.reweight_core_labels.items():
            w[CLASS_ORDER.index(label)] = weight
        probs = probs * w
        total = probs.sum()
        if total > 0:
            probs /= total
    bucket_probs = np.zeros(len(buckets))
    for i, (_, labels) in enumerate(buckets):
        indices = sorted(CLASS_ORDER.index(label) for label in labels)
        if config.advanced.probability_aggregation == "max":
            bucket_probs[i] = probs[indices].max()
        else:
            bucket_probs[i] = probs[indices].sum()
    total = bucket_probs.sum()
    if total > 0:
        bucket_probs /= total
    return [name for name, _ in buckets], bucket_probs


def assert_matches_reference(config: TaxonomyConfig, proba: np.ndarray, rejected) -> None:
    resolver = TaxonomyResolver(config)
    results = resolver.resolve_batch(np.zeros(len(proba), int), proba, is_rejected=rejected)
    # Rounding hides most last-bit differences: compare the unrounded values too.
    unrounded = resolver._bucket_proba(np.where(np.asarray(rejected)[:, None], 0.0, proba))
    for row, result, flag, got in zip(proba, results, rejected, unrounded, strict=True):
        if flag:
            assert result == TaxonomyResult(config.reject.mixed_label_name, {})
            continue
        names, probs = reference_bucket_probs(config, row)
        assert got.tolist() == probs.tolist()
        assert result.mapped_label == names[int(np.argmax(probs))]
        expected = [round(float(value), 6).hex() for value in probs]
        assert [v.hex() for v in result.mapped_probs.values()] == expected
        assert list(result.mapped_probs) == names


_ties = st.one_of(
    st.integers(0, 10**6).map(lambda k: k / 1e6 + 5e-7),
    st.integers(0, 63).map(lambda k: (2 * k + 1) / 128),
)


@st.composite
def probability_matrices(draw: st.DrawFn) -> np.ndarray:
    def tie_row(t: float) -> list[float]:  # a one-class bucket gets t, at a rounding tie
        row = [0.0] * 8
        first, second = draw(st.lists(st.integers(0, 7), min_size=2, max_size=2, unique=True))
        row[first], row[second] = t, 1.0 - t
        return row

    row = st.one_of(
        st.lists(st.one_of(st.floats(0.0, 1.0), _ties), min_size=8, max_size=8),
        _ties.map(tie_row),
    )
    proba = np.array(draw(st.lists(row, max_size=12)), dtype=np.float64).reshape(-1, 8)
    if draw(st.booleans()) and len(proba):
        totals = proba.sum(axis=1, keepdims=True)
        proba = np.divide(proba, totals, out=proba.copy(), where=totals > 0)
    return proba


@settings(max_examples=200, deadline=None)
@given(config=taxonomy_configs(), proba=probability_matrices(), data=st.data())
def test_resolver_equals_the_per_row_rules_bit_for_bit(config, proba, data):
    flags = st.lists(st.booleans(), min_size=len(proba), max_size=len(proba))
    assert_matches_reference(config, proba, np.array(data.draw(flags), dtype=bool))


@settings(max_examples=30, deadline=None)
@given(config=taxonomy_configs(max_buckets=300), seed=st.integers(0, 2**32 - 1))
def test_resolver_equals_the_rules_on_realistic_and_wide_batches(config, seed):
    # Over 128 buckets, numpy's pairwise summation splits each row recursively.
    rng = np.random.default_rng(seed)
    n_rows = 3000 // len(config.buckets)
    proba = rng.dirichlet(rng.uniform(0.05, 2.0, size=8), size=n_rows)
    assert_matches_reference(config, proba, rng.random(n_rows) < 0.1)


@pytest.mark.parametrize("case", [0, 1])
def test_taskclf_04s_mapped_labels_and_probabilities_are_reproduced(case):
    # Computed by taskclf 0.4.15's own resolver (tests/data/v04/make_fixture.py).
    fixture = json.loads((V04 / "mapped.json").read_text(encoding="utf-8"))["cases"][case]
    proba = np.array(fixture["proba"])
    results = TaxonomyResolver(load_taxonomy(V04 / fixture["taxonomy"])).resolve_batch(
        proba.argmax(axis=1), proba, is_rejected=np.array(fixture["is_rejected"])
    )
    assert [r.mapped_label for r in results] == fixture["mapped_labels"]
    assert [list(r.mapped_probs.items()) for r in results] == [
        list(probs.items()) for probs in fixture["mapped_probs"]
    ]


def test_hand_worked_examples():
    config = _config(("Coding", ["Build", "Debug"]), ("Talk", ["Meet", "Communicate"]))
    resolver = TaxonomyResolver(config)
    assert resolver.bucket_names == ["Coding", "Talk", "Other"]  # a list, as in 0.4
    row = _row(BreakIdle=0.3, Write=0.25, Build=0.2, Meet=0.15, Debug=0.1)
    assert resolver.resolve(0, row) == TaxonomyResult(
        "Other", {"Coding": 0.3, "Talk": 0.15, "Other": 0.55}
    )
    # Reweighting Meet x2: 0.4, 0.7, 0.25 over 1.35 changes the winner.
    plain = _config(("Coding", ["Build"]), ("Talk", ["Meet"]))
    row = _row(Build=0.4, Meet=0.35, BreakIdle=0.25)
    assert TaxonomyResolver(plain).resolve(1, row).mapped_label == "Coding"
    weighted = attrs.evolve(plain, advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2}))
    assert TaxonomyResolver(weighted).resolve(1, row).mapped_probs == {
        "Coding": 0.296296, "Talk": 0.518519, "Other": 0.185185,
    }  # fmt: skip
    # Max: maxima 0.2, 0.3, 0.2 over 0.7.
    row = _row(Build=0.2, Debug=0.2, Review=0.1, Meet=0.3, BreakIdle=0.2)
    config = _config(
        ("Coding", ["Build", "Debug", "Review"]),
        ("Talk", ["Meet"]),
        advanced=TaxonomyAdvanced(probability_aggregation="max"),
    )
    assert TaxonomyResolver(config).resolve(4, row) == TaxonomyResult(
        "Talk", {"Coding": 0.285714, "Talk": 0.428571, "Other": 0.285714}
    )
    # Ties go to the first bucket, also against Other; all-zero rows keep zeros;
    # unnormalized rows and overlapping buckets are renormalized.
    tie = TaxonomyResolver(_config(("B", ["Debug"]), ("A", ["Build"])))
    assert tie.resolve(1, _row(Build=0.5, Debug=0.5)).mapped_label == "B"
    assert tie.resolve(1, _row(Debug=0.5, Write=0.5)).mapped_label == "B"
    assert tie.resolve(0, np.zeros(8)).mapped_probs == {"B": 0.0, "A": 0.0, "Other": 0.0}
    assert tie.resolve(1, _row(Build=3.0, Meet=1.0)).mapped_probs["A"] == 0.75
    overlap = TaxonomyResolver(_config(("C", ["Build", "Debug"]), ("F", ["Build", "Write"])))
    assert overlap.resolve(1, _row(Build=0.5, Debug=0.25, Write=0.25)).mapped_probs == {
        "C": 0.5, "F": 0.5, "Other": 0.0,
    }  # fmt: skip


def test_rounding_is_pythons_and_min_confidence_is_not_used():
    assert np.round(2.5e-06, 6) == 2e-06 and round(2.5e-06, 6) == 3e-06
    resolver = TaxonomyResolver(_config(("A", ["Build"])))
    assert resolver.resolve(1, _row(Build=1 - 2.5e-06, Meet=2.5e-06)).mapped_probs["Other"] == 3e-06
    row = _row(Build=0.3, Meet=0.25, Write=0.25, BreakIdle=0.2)
    low = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(min_confidence_for_mapping=0.0))
    high = attrs.evolve(low, advanced=TaxonomyAdvanced(min_confidence_for_mapping=1.0))
    assert TaxonomyResolver(low).resolve(1, row) == TaxonomyResolver(high).resolve(1, row)


def test_rejected_rows_get_the_mixed_label_and_may_hold_nan():
    config = _config(("A", ["Build"]), reject=TaxonomyReject(mixed_label_name="Unsure"))
    proba = np.array([_row(Build=0.9, Meet=0.1), np.full(8, np.nan)])
    resolver = TaxonomyResolver(config)
    assert resolver.resolve_batch([1, 4], proba, is_rejected=[False, True]) == [
        TaxonomyResult("A", {"A": 0.9, "Other": 0.1}),
        TaxonomyResult("Unsure", {}),
    ]
    index, mapped = resolver.resolve_matrix(proba, np.array([False, True]))
    np.testing.assert_array_equal(index, [0, -1])
    np.testing.assert_array_equal(mapped, [[0.9, 0.1], [np.nan, np.nan]])
    index, mapped = resolver.resolve_matrix(np.zeros((0, 8)))
    assert index.shape == (0,) and mapped.shape == (0, 2)


def test_resolver_refuses_bad_arguments():
    resolver = TaxonomyResolver(default_taxonomy())
    refused(lambda: TaxonomyResolver({}), InvalidParameterError, "TaxonomyConfig, got dict")
    for shape in [(3, 7), (3, 9), (2, 2, 8)]:
        proba = np.zeros(shape)
        refused(lambda: resolver.resolve_matrix(proba), ProbabilityShapeError, "(n, 8)")  # noqa: B023
    refused(lambda: resolver.resolve(0, np.zeros(7)), ProbabilityShapeError, "(1, 7)")
    proba = np.zeros((4, 8))
    proba[2, 3] = np.nan
    refused(lambda: resolver.resolve_matrix(proba), InputError, "'proba_Debug'", "at row 2")
    refused(lambda: resolver.resolve_matrix(proba[:2], [True]), InputError, "length mismatch")
    refused(lambda: resolver.resolve_matrix(proba[:2], [0, 1]), InputError, "must be booleans")
    refused(lambda: resolver.resolve_batch([0], proba), InputError, "length mismatch")
    refused(lambda: resolver.resolve_batch([0, 8], proba[:2]), InputError, "in [0, 7]")
    refused(lambda: resolver.resolve_batch([0.0, 1], proba[:2]), InputError, "class indices")


@settings(max_examples=500, deadline=None)
@given(
    value=st.one_of(
        st.floats(),
        _ties,
        _ties.map(lambda v: float(np.nextafter(v, 2.0))),
        _ties.map(lambda v: -float(np.nextafter(v, -1.0))),
    ),
    ndigits=st.sampled_from([0, 2, 4, 6, 10]),
)
@example(0.0078125, 6)
@example(2.5e-06, 6)
@example(1e300, 6)
def test_round_like_python_is_pythons_round_bit_for_bit(value, ndigits):
    got = float(round_like_python(np.array([value, value]), ndigits)[1])
    expected = round(value, ndigits)
    assert got.hex() == expected.hex() or (np.isnan(got) and np.isnan(expected))


def test_round_like_python_keeps_shape_for_any_memory_layout():
    # Near-ties where rint(v * 1e6) / 1e6 is not round(v, 6): only the slow path is right.
    candidates = ((np.arange(200) + 0.5) / 1e6).tolist()
    ties = np.array([v for v in candidates if np.rint(v * 1e6) / 1e6 != round(v, 6)][:6])
    ties = ties.reshape(2, 3)
    for values in (ties, np.asfortranarray(ties), ties.T, ties[:, ::2]):
        expected = [[round(float(v), 6) for v in row] for row in values]
        assert round_like_python(values).tolist() == expected
    assert round_like_python(0.0078125).shape == ()


# ---------------------------------------------------------------------------
# TaxonomyMapper, the pipeline stage
# ---------------------------------------------------------------------------

CODING = _config(("Coding", ["Build", "Debug", "Review"]), ("Talk", ["Communicate", "Meet"]))
MAPPED = ["mapped_label", "mapped_proba_Coding", "mapped_proba_Talk", "mapped_proba_Other"]


def _frame(n: int = 6, seed: int = 0, rejected: bool = True) -> pd.DataFrame:
    """A frame as the merger leaves it: caller columns, probabilities, flags, label."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(8), size=n)
    frame = pd.DataFrame(
        proba, columns=list(PROBA_COLUMNS), index=pd.Index(rng.permutation(n) + 100, name="row")
    )
    frame.insert(0, "user_id", [f"u{i % 2}" for i in range(n)])
    if rejected:
        frame["is_rejected"] = proba.max(axis=1) < 0.3
    frame["label"] = pd.Categorical([CLASS_ORDER[i] for i in proba.argmax(axis=1)])
    return frame


def test_mapper_adds_the_resolvers_columns_and_keeps_the_callers():
    frame = _frame(40)
    before = frame.copy(deep=True)
    out = TaxonomyMapper(CODING).fit_transform(frame)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert list(out.columns) == [*frame.columns, *MAPPED]
    pd.testing.assert_frame_equal(out[frame.columns], frame)
    assert out["mapped_label"].cat.categories.tolist() == ["Coding", "Talk", "Other", MIXED_UNKNOWN]
    proba = frame[list(PROBA_COLUMNS)].to_numpy()
    expected = TaxonomyResolver(CODING).resolve_batch(
        proba.argmax(axis=1), proba, is_rejected=frame["is_rejected"].to_numpy()
    )
    assert out["mapped_label"].tolist() == [r.mapped_label for r in expected]
    values = out[MAPPED[1:]].to_numpy()
    for row, result in zip(values, expected, strict=True):
        assert row.tolist() == list(result.mapped_probs.values()) or np.isnan(row).all()
    shuffled = frame.sample(frac=1.0, random_state=3)
    mapper = TaxonomyMapper(CODING)
    pd.testing.assert_frame_equal(mapper.transform(shuffled).loc[frame.index], out)


def test_mapper_without_flags_empty_frames_and_earlier_mappings():
    out = TaxonomyMapper(CODING).transform(_frame(20, rejected=False))
    assert MIXED_UNKNOWN not in set(out["mapped_label"]) and out[MAPPED[1:]].notna().all().all()
    empty = TaxonomyMapper(CODING).transform(_frame(0))
    assert list(empty.columns[-4:]) == MAPPED and empty["mapped_proba_Coding"].dtype == np.float64
    again = TaxonomyMapper(default_taxonomy()).transform(out)
    assert not set(MAPPED[1:]) & set(again.columns)
    assert list(again.columns).count("mapped_label") == 1
    flags = _frame().assign(is_rejected=pd.array([True, False] * 3, dtype="boolean"))
    assert (
        TaxonomyMapper(CODING).transform(flags)["mapped_label"].tolist()[::2] == [MIXED_UNKNOWN] * 3
    )


def test_mapper_refuses_bad_frames():
    mapper = TaxonomyMapper(CODING)
    missing = _frame().drop(columns=["proba_Meet", "proba_Write"])
    refused(lambda: mapper.transform(missing), MissingColumnsError, "'proba_Meet', 'proba_Write'")
    text = _frame().astype({"proba_Meet": str})
    refused(lambda: mapper.transform(text), ColumnTypeError, "'proba_Meet' must hold probabilities")
    flags = _frame().assign(is_rejected=["yes"] * 6)
    refused(lambda: mapper.transform(flags), ColumnTypeError, "'is_rejected' must hold booleans")
    holes = _frame().assign(is_rejected=pd.array([True, None] * 3, dtype="boolean"))
    refused(lambda: mapper.transform(holes), ColumnTypeError, "3 missing value")
    nan = _frame(rejected=False)
    nan.loc[nan.index[4], "proba_Build"] = np.nan
    refused(lambda: mapper.transform(nan), InputError, "'proba_Build'", "at row 4")
    refused(lambda: mapper.transform(np.zeros((2, 8))), InputError, "DataFrame, got ndarray")
    refused(lambda: mapper.predict(_frame().drop(columns="label")), MissingColumnsError, "'label'")
    bad = TaxonomyMapper("taxonomy.yaml")
    refused(lambda: bad.fit(_frame()), InvalidParameterError, "must be a TaxonomyConfig")


def test_mapper_is_a_scikit_learn_estimator():
    frame = _frame(15)
    mapper = TaxonomyMapper(CODING)
    assert vars(mapper) == {"taxonomy": CODING} and mapper.__sklearn_tags__().requires_fit is False
    np.testing.assert_array_equal(mapper.predict(frame), frame["label"].to_numpy())
    assert mapper.fit(None) is mapper and mapper.bucket_names_ == ("Coding", "Talk", "Other")
    assert not hasattr(clone(mapper), "resolver_")
    restored = pickle.loads(pickle.dumps(mapper))
    pd.testing.assert_frame_equal(restored.transform(frame), mapper.transform(frame))
    other = _config(("Focus", ["Build", "Write"]))
    assert "mapped_proba_Focus" in mapper.set_params(taxonomy=other).transform(frame).columns
    pipeline = Pipeline([("taxonomy", TaxonomyMapper(CODING))]).fit(frame)
    np.testing.assert_array_equal(pipeline.predict(frame), frame["label"].to_numpy())
    default = TaxonomyMapper()
    assert default.__sklearn_tags__().requires_fit is True
    with pytest.raises(NotFittedError):
        default.transform(frame)
    assert default.fit(frame).bucket_names_ == tuple(label.value for label in CoreLabel)
    out = default.transform(_frame(rejected=False))
    assert out["mapped_label"].tolist() == out["label"].tolist()


# Bad input (contract: a specific error naming the problem)


@pytest.mark.parametrize("value", ["taxonomy.yaml", {"buckets": []}, 3])
@pytest.mark.parametrize("entry", ["pipeline.predict", "pipeline.transform", "pipeline.fit"])
def test_taxonomy_argument_of_the_wrong_type(entry, value, frame, booster_v1, encoders_v1):
    refused(
        lambda: ENTRY_POINTS[entry](booster_v1, encoders_v1, frame, taxonomy=value),
        InvalidParameterError,
        "TaxonomyConfig",
        type(value).__name__,
    )


def test_taxonomy_argument_of_the_wrong_type_in_run_batch_inference(frame, booster_v1, encoders_v1):
    refused(
        lambda: via_batch(booster_v1, encoders_v1, frame, taxonomy="taxonomy.yaml"),
        InvalidParameterError,
        "TaxonomyConfig",
        "str",
    )


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_taxonomy_changes_no_core_label(entry, frame, booster_v1, encoders_v1):
    config = TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Debug"])])
    plain = ENTRY_POINTS[entry](booster_v1, encoders_v1, frame, reject_threshold=0.5)
    mapped = ENTRY_POINTS[entry](
        booster_v1, encoders_v1, frame, reject_threshold=0.5, taxonomy=config
    )
    if entry == "run_batch_inference":
        assert mapped.raw_labels == plain.raw_labels and mapped.segments == plain.segments
        assert len(mapped.mapped_labels) == len(frame)
    elif entry.endswith(".transform"):
        pd.testing.assert_frame_equal(mapped[plain.columns], plain)
        assert set(mapped["mapped_label"].astype(str)) <= {"Coding", "Other", MIXED_UNKNOWN}
    else:
        np.testing.assert_array_equal(mapped, plain)
