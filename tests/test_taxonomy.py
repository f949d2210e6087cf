"""Tests of taskclf.taxonomy: configuration values, YAML files, the resolver
and the TaxonomyMapper pipeline stage."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ENTRY_POINTS, proba_frame, refused
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline

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

DOCS = Path(__file__).resolve().parent.parent / "docs"
V04 = Path(__file__).resolve().parent / "data" / "v04"
A = TaxonomyBucket("A", ["Build"])
Bucket, Config, Advanced = TaxonomyBucket, TaxonomyConfig, TaxonomyAdvanced


def _config(*buckets: tuple[str, list[str]], **kwargs: object) -> TaxonomyConfig:
    return TaxonomyConfig([TaxonomyBucket(name, labels) for name, labels in buckets], **kwargs)  # type: ignore[arg-type]


def _row(**values: float) -> np.ndarray:
    """A probability row in class order from keyword values (others 0)."""
    return np.array([values.get(label, 0.0) for label in CLASS_ORDER])


# Configuration values: every rule, its error and its words

REFUSED = [
    (lambda: Bucket("", ["Build"]), "bucket '': name must not be empty"),
    (lambda: Bucket("  ", ["Build"]), "bucket '  ': name must not be empty"),
    (lambda: Bucket(3, ["Build"]), "bucket: name must not be empty (text"),
    (lambda: Bucket("C", "Build"), "bucket 'C': core_labels must list one or more"),
    (lambda: Bucket("C", []), "bucket 'C': core_labels must list one or more"),
    (lambda: Bucket("C", ["Build", "Cod"]), "Unknown core label 'Cod' in bucket 'C' (core_label"),
    (lambda: Bucket("C", [1]), "Unknown core label 1 in bucket 'C'"),
    (lambda: Bucket("C", ["Build"] * 2), "bucket 'C': core_labels lists 'Build' more than once"),
    (lambda: Bucket("C", ["Build"], "#12345"), "Invalid hex color '#12345' in bucket 'C' (color)"),
    (lambda: Bucket("C", ["Build"], 0), "Invalid hex color 0"),
    (lambda: Bucket("C", ["Build"], description=1), "bucket 'C': description must be text"),
    (lambda: TaxonomyDisplay("yes"), "display: show_core_labels must be true or false, got str"),
    (lambda: TaxonomyDisplay(default_view="x"), "must be 'mapped' or 'core', got str 'x'"),
    (lambda: TaxonomyDisplay(color_theme=""), "display: color_theme must not be empty"),
    (lambda: TaxonomyReject(""), "reject: mixed_label_name must not be empty"),
    (lambda: TaxonomyReject(include_rejected_in_reports=1), "reports must be true or false"),
    (lambda: Advanced("mean"), "advanced: probability_aggregation must be 'sum' or 'max'"),
    (lambda: Advanced(reweight_core_labels=[1]), "weight_core_labels must map core labels to"),
    (lambda: Advanced(reweight_core_labels={"X": 2}), "Unknown core label 'X' in reweight_core"),
    (lambda: Config([]), "taxonomy: buckets must be 1 to 1000 TaxonomyBucket values"),
    (lambda: Config([{"name": "A"}]), "(taxonomy_from_dict builds them from plain data), got dict"),
    (lambda: Config([A] * (MAX_BUCKETS + 1)), "taxonomy: buckets must be 1 to 1000 TaxonomyBuck"),
    (lambda: Config([A, Bucket("B", ["Meet"]), A, Bucket("B", ["Meet"])]), "names: 'A', 'B'"),
    (lambda: _config(("Other", ["Build"])), "'Other' is reserved for core labels no bucket lists"),
    (lambda: Config([A], reject=TaxonomyReject("A")), "mixed_label_name 'A' is also a bucket"),
    (lambda: Config([A], reject=TaxonomyReject("Other")), "mixed_label_name 'Other' is also"),
    (lambda: Config([A], label_schema_version="v9"), "must be 'labels_v1', got str 'v9'"),
    (lambda: Config([A], version=""), "taxonomy: version must not be empty"),
    (lambda: Config([A], user_id=" "), "taxonomy: user_id must not be empty"),
    (lambda: Config([A], display={}), "taxonomy: display must be a TaxonomyDisplay, got dict"),
]
for bad in [0, 0.0, -1, float("inf"), float("nan"), True, "2", 10**400]:
    words = "Reweight for 'Build' must be > 0 (a finite number) in reweight_core_labels (advanced)"
    REFUSED.append((lambda b=bad: Advanced(reweight_core_labels={"Meet": 1, "Build": b}), words))
for bad in [-0.1, 1.5, float("nan"), "0.5", True, 10**400]:
    words = "advanced: min_confidence_for_mapping must be a number in [0, 1]"
    REFUSED.append((lambda b=bad: Advanced(min_confidence_for_mapping=b), words))


@pytest.mark.parametrize(("make", "words"), REFUSED)
def test_each_rule_refuses_naming_where_field_and_value(make, words):
    refused(make, TaxonomyError, words)


@settings(max_examples=60, deadline=None)
@given(
    name=st.one_of(st.text(max_size=100), st.integers(), st.none()),
    color=st.one_of(st.text(max_size=100), st.from_regex(r"#[0-9A-Fa-f]{6}", fullmatch=True)),
    labels=st.lists(st.one_of(st.sampled_from(CLASS_ORDER), st.text(max_size=100)), max_size=9),
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
        assert not valid and len(str(exc)) < 400
    else:
        assert valid and bucket.core_labels == tuple(labels)


def test_values_are_converted_and_revalidated_by_evolve():
    bucket = TaxonomyBucket("Coding", ["Build", "Debug"])
    assert bucket == TaxonomyBucket("Coding", ("Build", "Debug"), "#808080", "")
    refused(lambda: attrs.evolve(bucket, core_labels=["Nope"]), TaxonomyError, "'Nope'")
    assert Advanced(min_confidence_for_mapping=1).min_confidence_for_mapping == 1.0
    given = {"Meet": 2, "Build": 0.5}
    weights = Advanced(reweight_core_labels=given).reweight_core_labels
    given["Meet"] = 9  # a copy was stored, a plain dict of floats as in 0.4
    assert type(weights) is dict and weights == {"Meet": 2.0, "Build": 0.5}
    assert Advanced(reweight_core_labels=None) == Advanced()
    a = Config([A], advanced=Advanced(reweight_core_labels={"Meet": 2}))
    assert hash(a) == hash(Config([A], advanced=Advanced(reweight_core_labels={"Meet": 2.5})))


def test_the_fallback_bucket_and_the_default_taxonomy():
    config = _config(("Coding", ["Debug", "Build"]), ("Talk", ["Meet"]))
    assert config.bucket_names == ("Coding", "Talk", "Other")
    other = config.resolved_buckets[-1]
    assert other.core_labels == ("BreakIdle", "Communicate", "ReadResearch", "Review", "Write")
    assert config.buckets == config.resolved_buckets[:2]
    # Overlaps are allowed; no Other when all is covered, so a bucket may take the name.
    assert _config(("C", ["Build"]), ("F", ["Build", "Write"])).bucket_names[-1] == "Other"
    labels = list(CLASS_ORDER)
    assert _config(("C", labels[:4]), ("Other", labels[4:])).bucket_names == ("C", "Other")
    default = default_taxonomy()
    assert default.bucket_names == tuple(label.value for label in CoreLabel)
    assert default.bucket_names[:3] == ("Build", "Debug", "Review")
    assert all(b.core_labels == (b.name,) and type(b.name) is str for b in default.buckets)
    assert default.buckets[0].description == "Core label: Build"
    # Validation is linear (quadratic checks took seconds here).
    many = [TaxonomyBucket(f"B{i}", [CLASS_ORDER[i % 8]]) for i in range(MAX_BUCKETS)]
    assert len(TaxonomyConfig(many).bucket_names) == MAX_BUCKETS


# Plain dicts and YAML files


@st.composite
def taxonomy_configs(draw: st.DrawFn) -> TaxonomyConfig:
    labels = st.lists(st.sampled_from(CLASS_ORDER), min_size=1, max_size=8, unique=True)
    buckets = [TaxonomyBucket(f"B{i}", draw(labels)) for i in range(draw(st.integers(1, 10)))]
    weight = st.one_of(st.floats(1e-3, 1e3), st.sampled_from([0.5, 1.0, 2.0, 3.0]))
    advanced = Advanced(
        probability_aggregation=draw(st.sampled_from(["sum", "max"])),
        reweight_core_labels=draw(st.dictionaries(st.sampled_from(CLASS_ORDER), weight)),
    )
    return TaxonomyConfig(buckets, advanced=advanced)


@settings(max_examples=25, deadline=None)
@given(config=taxonomy_configs())
def test_dict_and_yaml_round_trips(config):
    assert taxonomy_from_dict(taxonomy_to_dict(config)) == config
    text = yaml.safe_dump(taxonomy_to_dict(config), sort_keys=False)
    assert taxonomy_from_dict(yaml.safe_load(text)) == config


def test_file_layout_is_taskclf_04s(tmp_path):
    buckets = [TaxonomyBucket("Réunions", ["Meet", "Build"], "#ABCDEF", "x")]
    sections = TaxonomyDisplay(True, "core"), TaxonomyReject("U", True), Advanced("max", 0.7, {})
    config = TaxonomyConfig(buckets, "2.1", "labels_v1", "u7", *sections)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.yaml").write_text("old", encoding="utf-8")  # replaced
    path = save_taxonomy(config, tmp_path / "sub" / "t.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(data) == [
        "version", "label_schema_version", "user_id", "display", "reject", "buckets", "advanced",
    ]  # fmt: skip
    assert list(data["buckets"][0]) == ["name", "description", "core_labels", "color"]
    assert data["buckets"][0]["core_labels"] == ["Meet", "Build"]
    assert data["version"] == "2.1" and data["advanced"]["probability_aggregation"] == "max"
    assert load_taxonomy(path) == config == load_taxonomy(str(path))
    assert os.listdir(path.parent) == ["t.yaml"]  # no temporary left over
    # Plain data: null is the default, a numeric version becomes text.
    one = [{"name": "A", "core_labels": ["Build"], "color": None}]
    assert taxonomy_from_dict({"version": None, "display": None, "buckets": one}) == Config([A])
    assert taxonomy_from_dict({"version": 1.5, "buckets": one}).version == "1.5"
    refused(lambda: taxonomy_to_dict(one), TaxonomyError, "expected a TaxonomyConfig, got list")


ONE = {"name": "A", "core_labels": ["Build"]}
BAD_DICTS = [
    ({}, r"taxonomy: missing required key\(s\) 'buckets'"),
    ({"buckets": [], "colour": 1}, r"key\(s\) 'colour'; allowed keys: buckets, version, label_"),
    ({"buckets": {"name": "A"}}, "taxonomy: buckets must be a list of mappings, got dict"),
    ({"buckets": ["A"]}, r"buckets\[0\] must be a mapping, got str 'A'"),
    ({"buckets": [{"name": "A"}]}, r"buckets\[0\]: missing required key\(s\) 'core_labels'"),
    ({"buckets": [ONE | {"colour": 0}]}, r"buckets\[0\]: unknown key\(s\) 'colour'"),
    ({"buckets": [ONE, ONE | {"name": "B", "core_labels": ["X"]}]}, r"buckets\[1\]: Unknown core"),
    ({"buckets": [ONE], "display": "x"}, "display must be a mapping, got str 'x'"),
    ({"buckets": [ONE], "advanced": {"aggregation": 1}}, r"advanced: unknown key\(s\) 'aggreg"),
    ({"buckets": [ONE], "version": True}, "taxonomy: version must not be empty"),
    ({"buckets": [ONE] * 16_000}, "at most 1000 buckets, got 16000"),  # before building any
]


@pytest.mark.parametrize(("data", "message"), BAD_DICTS)
def test_bad_plain_data(data, message):
    with pytest.raises(TaxonomyError, match=message):
        taxonomy_from_dict(data)


def test_the_docs_example_loads_and_is_the_one_the_docs_show():
    example = DOCS / "examples" / "taxonomy.yaml"
    assert f"```yaml\n{example.read_text(encoding='utf-8')}```" in (DOCS / "predict.md").read_text()
    config = load_taxonomy(example)
    assert config.bucket_names == ("Coding", "Docs & research", "People", "Other")
    assert config.resolved_buckets[-1].core_labels == ("BreakIdle",)
    assert config.advanced.reweight_core_labels == {"Review": 1.5}


GOOD = "buckets:\n  - name: Coding\n    core_labels: [Build, Debug]\n"
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
) + "buckets: *h\n"  # fmt: skip
"""347 bytes standing for 9**8 (43 million) values."""
MERGE_KEY = "base: &b {core_labels: [Build]}\nbuckets:\n  - {<<: *b, name: A}\n"
BAD_FILES = [
    (GOOD.replace("Build", "Coding"), TaxonomyError, "Unknown core label 'Coding' in bucket"),
    (GOOD.replace("Build", "build"), TaxonomyError, "Unknown core label 'build'"),
    ("version: 1\n", TaxonomyError, "missing required key(s) 'buckets'"),
    (GOOD + "colour_theme: dark\n", TaxonomyError, "unknown key(s) 'colour_theme'"),
    ("- Build\n- Debug\n", TaxonomyError, "taxonomy must be a mapping, got list ['Build', 'De"),
    ("# nothing\n", TaxonomyError, "taxonomy: missing required key(s) 'buckets'"),
    ("a: \x00\n", ReaderError, "not valid YAML: unacceptable character #x0000"),
    ("buckets: [\n  - name: {\n", ReaderError, "not valid YAML: line 2, column 3: expected"),
    (GOOD + "advanced:\n  reweight_core_labels: {Build: -1}\n", TaxonomyError, "'Build' must be >"),
    (BILLION_LAUGHS, ReaderError, "not valid YAML: line 2, column 8: aliases (*a) are not allowed"),
    (MERGE_KEY, ReaderError, "not valid YAML: line 3, column 10: aliases (*b) are not allowed"),
    (GOOD + "version: " + "9" * 5000, ReaderError, "not valid YAML: Exceeds the limit (4300"),
    ("buckets: " + "[" * 500 + "]" * 500, ReaderError, "line 1, column 29: nested deeper than 20"),
]


@pytest.mark.parametrize(("text", "error", "words"), BAD_FILES)
def test_taxonomy_file_is_refused_naming_the_file(text, error, words, tmp_path):
    path = tmp_path / "my taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    message = str(refused(lambda: load_taxonomy(path), error, f"taxonomy file {path}: ", words))
    assert len(message) < 600


def test_only_existing_regular_files_of_bounded_size_are_read(tmp_path):
    error = refused(lambda: load_taxonomy(tmp_path / "nope.yaml"), MissingFileError, "nope.yaml")
    assert isinstance(error, FileNotFoundError) and isinstance(error, ReaderError)
    refused(lambda: load_taxonomy(tmp_path), ReaderError, "is not a regular file")
    (big := tmp_path / "big.yaml").write_text(GOOD + "#" * MAX_TAXONOMY_BYTES, encoding="utf-8")
    size = len(GOOD) + MAX_TAXONOMY_BYTES
    refused(lambda: load_taxonomy(big), ReaderError, f"too large ({size} bytes; at most 1048576)")
    (binary := tmp_path / "binary.yaml").write_bytes(b"buckets: \x80\xff")
    refused(lambda: load_taxonomy(binary), ReaderError, "not valid YAML: unacceptable character")


# The mapping rules


def reference(config: TaxonomyConfig, p: np.ndarray) -> np.ndarray:
    """The bucket probabilities of one row as taskclf 0.4 computes them."""
    probs = np.asarray(p, dtype=np.float64).copy()
    if weights := config.advanced.reweight_core_labels:
        probs = probs * np.array([weights.get(label, 1.0) for label in CLASS_ORDER])
        if (total := probs.sum()) > 0:
            probs /= total
    aggregate = np.max if config.advanced.probability_aggregation == "max" else np.sum
    members = [sorted(map(CLASS_ORDER.index, b.core_labels)) for b in config.resolved_buckets]
    bucket_probs = np.array([aggregate(probs[m]) for m in members])
    if (total := bucket_probs.sum()) > 0:
        bucket_probs /= total
    return bucket_probs


def assert_matches_reference(config: TaxonomyConfig, proba: np.ndarray, rejected) -> None:
    resolver = TaxonomyResolver(config)
    results = resolver.resolve_batch(np.zeros(len(proba), int), proba, is_rejected=rejected)
    # Rounding hides most last-bit differences: compare the unrounded values too.
    unrounded = resolver._bucket_proba(np.where(rejected[:, None], 0.0, proba))
    for row, result, flag, got in zip(proba, results, rejected, unrounded, strict=True):
        if flag:
            assert result == TaxonomyResult(config.reject.mixed_label_name, {})
            continue
        probs = reference(config, row)
        assert got.tolist() == probs.tolist()
        assert result.mapped_label == config.bucket_names[int(np.argmax(probs))]
        assert list(result.mapped_probs) == list(config.bucket_names)
        expected = [round(float(value), 6).hex() for value in probs]
        assert [v.hex() for v in result.mapped_probs.values()] == expected


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

    any_row = st.lists(st.one_of(st.floats(0.0, 1.0), _ties), min_size=8, max_size=8)
    rows = draw(st.lists(st.one_of(any_row, _ties.map(tie_row)), max_size=6))
    proba = np.array(rows, dtype=np.float64).reshape(-1, 8)
    if draw(st.booleans()):
        totals = proba.sum(axis=1, keepdims=True)
        proba = np.divide(proba, totals, out=proba.copy(), where=totals > 0)
    return proba


@settings(max_examples=50, deadline=None)
@given(config=taxonomy_configs(), proba=probability_matrices(), data=st.data())
def test_resolver_equals_the_per_row_rules_bit_for_bit(config, proba, data):
    flags = data.draw(st.lists(st.booleans(), min_size=len(proba), max_size=len(proba)))
    assert_matches_reference(config, proba, np.array(flags, dtype=bool))


@pytest.mark.parametrize("n_buckets", [130, 300])
def test_resolver_equals_the_rules_on_wide_taxonomies(n_buckets):
    # Over 128 buckets, numpy's pairwise summation splits each row recursively.
    rng = np.random.default_rng(n_buckets)
    labels = [rng.choice(CLASS_ORDER, rng.integers(1, 9), replace=False) for _ in range(n_buckets)]
    config = TaxonomyConfig([TaxonomyBucket(f"B{i}", list(x)) for i, x in enumerate(labels)])
    proba = rng.dirichlet(np.full(8, 0.3), size=12)
    assert_matches_reference(config, proba, rng.random(12) < 0.2)
    weights = Advanced(reweight_core_labels={"Meet": 2.5, "Write": 0.3})
    assert_matches_reference(attrs.evolve(config, advanced=weights), proba, np.zeros(12, bool))


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
    resolver = TaxonomyResolver(_config(("Coding", ["Build", "Debug"]), ("Talk", ["Meet"])))
    assert resolver.bucket_names == ["Coding", "Talk", "Other"]  # a list, as in 0.4
    row = _row(BreakIdle=0.3, Write=0.25, Build=0.2, Meet=0.15, Debug=0.1)
    assert resolver.resolve(0, row) == TaxonomyResult(
        "Other", {"Coding": 0.3, "Talk": 0.15, "Other": 0.55}
    )
    # Reweighting Meet x2: 0.4, 0.7, 0.25 over 1.35 changes the winner.
    plain = _config(("Coding", ["Build"]), ("Talk", ["Meet"]))
    row = _row(Build=0.4, Meet=0.35, BreakIdle=0.25)
    assert TaxonomyResolver(plain).resolve(1, row).mapped_label == "Coding"
    weighted = attrs.evolve(plain, advanced=Advanced(reweight_core_labels={"Meet": 2}))
    probs = {"Coding": 0.296296, "Talk": 0.518519, "Other": 0.185185}
    assert TaxonomyResolver(weighted).resolve(1, row) == TaxonomyResult("Talk", probs)
    # Max: maxima 0.2, 0.3, 0.2 over 0.7.
    row = _row(Build=0.2, Debug=0.2, Review=0.1, Meet=0.3, BreakIdle=0.2)
    by_max = Advanced(probability_aggregation="max")
    config = _config(("Coding", ["Build", "Debug", "Review"]), ("Talk", ["Meet"]), advanced=by_max)
    probs = {"Coding": 0.285714, "Talk": 0.428571, "Other": 0.285714}
    assert TaxonomyResolver(config).resolve(4, row) == TaxonomyResult("Talk", probs)
    # Ties go to the first bucket, also against Other; all-zero rows keep zeros;
    # unnormalized rows and overlapping buckets are renormalized.
    tie = TaxonomyResolver(_config(("B", ["Debug"]), ("A", ["Build"])))
    assert tie.resolve(1, _row(Build=0.5, Debug=0.5)).mapped_label == "B"
    assert tie.resolve(1, _row(Debug=0.5, Write=0.5)).mapped_label == "B"
    assert tie.resolve(0, np.zeros(8)).mapped_probs == {"B": 0.0, "A": 0.0, "Other": 0.0}
    assert tie.resolve(1, _row(Build=3.0, Meet=1.0)).mapped_probs["A"] == 0.75
    overlap = TaxonomyResolver(_config(("C", ["Build", "Debug"]), ("F", ["Build", "Write"])))
    probs = overlap.resolve(1, _row(Build=0.5, Debug=0.25, Write=0.25)).mapped_probs
    assert probs == {"C": 0.5, "F": 0.5, "Other": 0.0}


def test_rounding_is_pythons_and_min_confidence_is_not_used():
    assert np.round(2.5e-06, 6) == 2e-06 and round(2.5e-06, 6) == 3e-06
    # Near-ties where rint(v * 1e6) / 1e6 is not round(v, 6), in any memory layout.
    candidates = ((np.arange(200) + 0.5) / 1e6).tolist()
    ties = np.array([v for v in candidates if np.rint(v * 1e6) / 1e6 != round(v, 6)][:6])
    for values in (ties.reshape(2, 3), np.asfortranarray(ties.reshape(2, 3)), ties[::2]):
        assert round_like_python(values).tolist() == np.vectorize(round)(values, 6).tolist()
    assert round_like_python(0.0078125).shape == ()
    resolver = TaxonomyResolver(_config(("A", ["Build"])))
    assert resolver.resolve(1, _row(Build=1 - 2.5e-06, Meet=2.5e-06)).mapped_probs["Other"] == 3e-06
    row = _row(Build=0.3, Meet=0.25, Write=0.25, BreakIdle=0.2)
    low = _config(("A", ["Build"]), advanced=Advanced(min_confidence_for_mapping=0.0))
    high = attrs.evolve(low, advanced=Advanced(min_confidence_for_mapping=1.0))
    assert TaxonomyResolver(low).resolve(1, row) == TaxonomyResolver(high).resolve(1, row)


def test_rejected_rows_get_the_mixed_label_and_may_hold_nan():
    resolver = TaxonomyResolver(Config([A], reject=TaxonomyReject(mixed_label_name="Unsure")))
    proba = np.array([_row(Build=0.9, Meet=0.1), np.full(8, np.nan)])
    assert resolver.resolve_batch([1, 4], proba, is_rejected=[False, True]) == [
        TaxonomyResult("A", {"A": 0.9, "Other": 0.1}),
        TaxonomyResult("Unsure", {}),
    ]
    assert resolver.resolve(1, proba[1], is_rejected=True) == TaxonomyResult("Unsure", {})
    index, mapped = resolver.resolve_matrix(proba, np.array([False, True]))
    np.testing.assert_array_equal(index, [0, -1])
    np.testing.assert_array_equal(mapped, [[0.9, 0.1], [np.nan, np.nan]])
    index, mapped = resolver.resolve_matrix(np.zeros((0, 8)))
    assert index.shape == (0,) and mapped.shape == (0, 2)


def test_resolver_refuses_bad_arguments():
    resolver, proba = TaxonomyResolver(default_taxonomy()), np.zeros((2, 8))
    cases = [
        (lambda: TaxonomyResolver({}), InvalidParameterError, "TaxonomyConfig, got dict"),
        (lambda: resolver.resolve_matrix(np.zeros((3, 7))), ProbabilityShapeError, "(n, 8)"),
        (lambda: resolver.resolve_matrix(np.zeros((2, 2, 8))), ProbabilityShapeError, "(n, 8)"),
        (lambda: resolver.resolve(0, np.zeros(7)), ProbabilityShapeError, "got shape (1, 7)"),
        (lambda: resolver.resolve(0, [np.inf] * 8), InputError, "'proba_BreakIdle' holds inf"),
        (lambda: resolver.resolve_matrix(proba, [True]), InputError, "length mismatch: is_rej"),
        (lambda: resolver.resolve_matrix(proba, [0, 1]), InputError, "must be booleans, got dt"),
        (lambda: resolver.resolve_batch([0], proba), InputError, "length mismatch: core_label"),
        (lambda: resolver.resolve_batch([0, 8], proba), InputError, "indices in [0, 7], got d"),
        (lambda: resolver.resolve_batch([0.0, 1], proba), InputError, "class indices in [0, 7]"),
        (lambda: round_like_python(1.0, 16), InvalidParameterError, "ndigits must be in [0, 15]"),
    ]
    for call, error, words in cases:
        refused(call, error, words)


@settings(max_examples=150, deadline=None)
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


# TaxonomyMapper, the pipeline stage (tests/test_estimator_checks.py checks it as a stage)

CODING = _config(("Coding", ["Build", "Debug", "Review"]), ("Talk", ["Communicate", "Meet"]))
MAPPED = ["mapped_label", "mapped_proba_Coding", "mapped_proba_Talk", "mapped_proba_Other"]


def _frame(n: int = 6, rejected: bool = True) -> pd.DataFrame:
    """A frame as the merger leaves it: caller columns, probabilities, flags, label."""
    proba = np.random.default_rng(0).dirichlet(np.ones(8), size=n)
    frame = proba_frame(proba, user_id=[f"u{i % 2}" for i in range(n)])
    if rejected:
        frame["is_rejected"] = proba.max(axis=1) < 0.3
    return frame.assign(label=pd.Categorical([CLASS_ORDER[i] for i in proba.argmax(axis=1)]))


def test_mapper_adds_the_resolvers_columns():
    frame = _frame(40)
    out = TaxonomyMapper(CODING).transform(frame)
    assert list(out.columns) == [*frame.columns, *MAPPED]
    assert out["mapped_label"].cat.categories.tolist() == ["Coding", "Talk", "Other", MIXED_UNKNOWN]
    proba, flags = frame[list(PROBA_COLUMNS)].to_numpy(), frame["is_rejected"].to_numpy()
    expected = TaxonomyResolver(CODING).resolve_batch(proba.argmax(1), proba, is_rejected=flags)
    assert out["mapped_label"].tolist() == [r.mapped_label for r in expected]
    for row, result in zip(out[MAPPED[1:]].to_numpy(), expected, strict=True):
        assert row.tolist() == list(result.mapped_probs.values()) or np.isnan(row).all()
    # Without flags nothing is rejected; an earlier mapping's columns are replaced.
    out = TaxonomyMapper(CODING).transform(frame.drop(columns="is_rejected"))
    assert MIXED_UNKNOWN not in set(out["mapped_label"]) and out[MAPPED[1:]].notna().all().all()
    again = TaxonomyMapper(default_taxonomy()).transform(out)
    assert not set(MAPPED[1:]) & set(again.columns) and list(again.columns).count(MAPPED[0]) == 1
    flags = _frame().assign(is_rejected=pd.array([True, False] * 3, dtype="boolean"))
    labels = TaxonomyMapper(CODING).transform(flags)["mapped_label"]
    assert labels.tolist()[::2] == [MIXED_UNKNOWN] * 3


def test_mapper_refuses_bad_frames():
    mapper, frame = TaxonomyMapper(CODING), _frame()
    cases = [
        (frame.drop(columns=["proba_Meet", "proba_Write"]), MissingColumnsError, "'proba_Meet', "),
        (frame.astype({"proba_Meet": str}), ColumnTypeError, "'proba_Meet' must hold probabilit"),
        (frame.assign(proba_Meet=True), ColumnTypeError, "'proba_Meet' must hold probabilities"),
        (frame.assign(is_rejected=["yes"] * 6), ColumnTypeError, "'is_rejected' must hold boolea"),
        (frame.assign(is_rejected=pd.array([True, None] * 3)), ColumnTypeError, "3 missing value"),
        (frame.assign(proba_Build=[0, 0, 0, 0, np.nan, 0]), InputError, "holds nan at row 4"),
    ]
    for bad, error, words in cases:
        refused(lambda bad=bad: mapper.transform(bad), error, words)
    refused(lambda: mapper.predict(frame.drop(columns="label")), MissingColumnsError, "'label'")
    bad = TaxonomyMapper("taxonomy.yaml")
    refused(lambda: bad.fit(frame), InvalidParameterError, "must be a TaxonomyConfig, got str")
    refused(lambda: bad.predict(frame), InvalidParameterError, "must be a TaxonomyConfig")


def test_mapper_as_a_scikit_learn_stage():
    frame = _frame(15)
    mapper = TaxonomyMapper(CODING)
    assert mapper.fit(None).bucket_names_ == ("Coding", "Talk", "Other")
    np.testing.assert_array_equal(mapper.predict(frame), frame["label"].to_numpy())
    assert mapper.score(frame, frame["label"]) == 1.0
    other = _config(("Focus", ["Build", "Write"]))
    assert "mapped_proba_Focus" in mapper.set_params(taxonomy=other).transform(frame).columns
    pipeline = Pipeline([("taxonomy", TaxonomyMapper(CODING))]).fit(frame)
    np.testing.assert_array_equal(pipeline.predict(frame), frame["label"].to_numpy())
    default = TaxonomyMapper().fit(frame)  # the identity taxonomy
    assert default.bucket_names_ == tuple(label.value for label in CoreLabel)
    out = default.transform(frame.drop(columns="is_rejected"))
    assert out["mapped_label"].tolist() == out["label"].tolist()


# Through the entry points (contract: a specific error naming the problem, no core label changed)


@pytest.mark.parametrize("value", ["taxonomy.yaml", {"buckets": []}])
@pytest.mark.parametrize("entry", ["pipeline.predict", "pipeline.fit", "run_batch_inference"])
def test_taxonomy_argument_of_the_wrong_type(entry, value, frame, booster_v1, encoders_v1):
    call = ENTRY_POINTS[entry]
    words = "TaxonomyConfig", type(value).__name__
    refused(
        lambda: call(booster_v1, encoders_v1, frame, taxonomy=value), InvalidParameterError, *words
    )


@pytest.mark.parametrize(
    "entry", ["pipeline.transform", "run_batch_inference", "distributed.transform"]
)
def test_a_taxonomy_changes_no_core_label(entry, frame, booster_v1, encoders_v1):
    config, call = Config([Bucket("Coding", ["Build", "Debug"])]), ENTRY_POINTS[entry]
    plain = call(booster_v1, encoders_v1, frame, reject_threshold=0.5)
    mapped = call(booster_v1, encoders_v1, frame, reject_threshold=0.5, taxonomy=config)
    if entry == "run_batch_inference":
        assert mapped.raw_labels == plain.raw_labels and mapped.segments == plain.segments
        assert len(mapped.mapped_labels) == len(frame)
    else:
        pd.testing.assert_frame_equal(mapped[plain.columns], plain)
        assert set(mapped["mapped_label"].astype(str)) <= {"Coding", "Other", MIXED_UNKNOWN}
