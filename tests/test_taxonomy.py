"""Tests of taskclf.taxonomy: configuration values, YAML files, the resolver
and the TaxonomyMapper pipeline stage."""

from __future__ import annotations

import copy
import doctest
import os
import pickle
import re
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import (
    ENTRY_POINTS,
    refused,
    via_batch,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline

import taskclf.taxonomy as taxonomy_module
from taskclf._columns import PROBA_COLUMNS
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import (
    ColumnTypeError,
    InputError,
    InvalidParameterError,
    MissingColumnsError,
    ProbabilityShapeError,
    ReaderError,
    TaxonomyError,
)
from taskclf.taxonomy import (
    FALLBACK_BUCKET,
    MappedMatrix,
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

EXAMPLE_YAML = Path(__file__).resolve().parent.parent / "docs" / "examples" / "taxonomy.yaml"


def _at(path: Path) -> str:
    """A regex matching *path* literally (error messages start with the file)."""
    return re.escape(str(path))


ONE_BUCKET: list[dict[str, object]] = [{"name": "A", "core_labels": ["Build"]}]


def _config(*buckets: tuple[str, list[str]], **kwargs: object) -> TaxonomyConfig:
    return TaxonomyConfig(
        tuple(TaxonomyBucket(name, labels) for name, labels in buckets),
        **kwargs,  # type: ignore[arg-type]
    )


def test_docstring_examples_run() -> None:
    result = doctest.testmod(
        taxonomy_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------------
# Value objects
# ---------------------------------------------------------------------------


class TestBucket:
    def test_list_becomes_tuple_and_defaults(self) -> None:
        bucket = TaxonomyBucket("Coding", ["Build", "Debug"])
        assert bucket.core_labels == ("Build", "Debug")
        assert bucket.color == "#808080"
        assert bucket.description == ""
        assert bucket == TaxonomyBucket("Coding", ("Build", "Debug"))
        assert hash(bucket) == hash(TaxonomyBucket("Coding", ("Build", "Debug")))

    def test_frozen(self) -> None:
        bucket = TaxonomyBucket("Coding", ["Build"])
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            bucket.name = "x"  # type: ignore[misc]

    def test_unknown_core_label_names_label_and_bucket(self) -> None:
        with pytest.raises(TaxonomyError, match=r"bucket 'Coding'.*unknown core label 'Cod'"):
            TaxonomyBucket("Coding", ["Build", "Cod"])

    def test_unknown_label_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="'Meeting'"):
            TaxonomyBucket("Talk", ["Meeting"])

    def test_empty_core_labels(self) -> None:
        with pytest.raises(TaxonomyError, match=r"bucket 'Empty': core_labels is empty"):
            TaxonomyBucket("Empty", [])

    def test_repeated_core_label(self) -> None:
        with pytest.raises(TaxonomyError, match="'Build' is listed more than once"):
            TaxonomyBucket("Coding", ["Build", "Debug", "Build"])

    def test_core_labels_as_a_string_is_refused(self) -> None:
        with pytest.raises(TaxonomyError, match="core_labels must be a list"):
            TaxonomyBucket("Coding", "Build")

    @pytest.mark.parametrize("name", ["", "   ", 3, None])
    def test_bad_name(self, name: object) -> None:
        with pytest.raises(TaxonomyError, match="name"):
            TaxonomyBucket(name, ["Build"])  # type: ignore[arg-type]

    @pytest.mark.parametrize("color", ["red", "#12345", "#1234567", "123456", "#GGGGGG", 0])
    def test_bad_colour_names_bucket_and_value(self, color: object) -> None:
        with pytest.raises(TaxonomyError, match=r"bucket 'Coding': color must be a #RRGGBB"):
            TaxonomyBucket("Coding", ["Build"], color=color)  # type: ignore[arg-type]

    def test_good_colours(self) -> None:
        assert TaxonomyBucket("A", ["Build"], color="#a0B1c2").color == "#a0B1c2"

    def test_evolve_revalidates(self) -> None:
        bucket = TaxonomyBucket("Coding", ["Build"])
        assert attrs.evolve(bucket, core_labels=["Debug"]).core_labels == ("Debug",)
        with pytest.raises(TaxonomyError, match="'Nope'"):
            attrs.evolve(bucket, core_labels=["Nope"])


class TestSections:
    def test_display(self) -> None:
        assert TaxonomyDisplay() == TaxonomyDisplay(False, "mapped", "default")
        assert TaxonomyDisplay(default_view="core").default_view == "core"
        with pytest.raises(TaxonomyError, match=r"display: default_view .* got str 'both'"):
            TaxonomyDisplay(default_view="both")
        with pytest.raises(TaxonomyError, match="show_core_labels must be true or false"):
            TaxonomyDisplay(show_core_labels="yes")  # type: ignore[arg-type]

    def test_reject(self) -> None:
        assert TaxonomyReject().mixed_label_name == MIXED_UNKNOWN
        with pytest.raises(TaxonomyError, match="mixed_label_name must not be empty"):
            TaxonomyReject(mixed_label_name="")
        with pytest.raises(TaxonomyError, match="include_rejected_in_reports"):
            TaxonomyReject(include_rejected_in_reports=1)  # type: ignore[arg-type]

    def test_advanced_defaults(self) -> None:
        advanced = TaxonomyAdvanced()
        assert advanced.probability_aggregation == "sum"
        assert advanced.min_confidence_for_mapping == 0.55
        assert advanced.reweight_core_labels == ()
        assert advanced.weights == {}

    def test_advanced_weights_are_canonical_hashable_and_evolvable(self) -> None:
        a = TaxonomyAdvanced(reweight_core_labels={"Write": 2, "Build": 0.5})
        b = TaxonomyAdvanced(reweight_core_labels=[("Build", 0.5), ("Write", 2.0)])
        assert a == b
        assert hash(a) == hash(b)
        assert a.reweight_core_labels == (("Build", 0.5), ("Write", 2.0))
        assert attrs.evolve(a, probability_aggregation="max").weights == a.weights

    @pytest.mark.parametrize(
        ("weights", "message"),
        [
            ({"Coding": 2.0}, "unknown core label 'Coding'"),
            ({"Build": 0.0}, r"weight of 'Build' must be finite and > 0, got 0\.0"),
            ({"Build": -1}, "must be finite and > 0"),
            ({"Build": float("inf")}, "must be finite and > 0"),
            ({"Build": float("nan")}, "must be finite and > 0"),
            ({"Build": "2"}, "weight of 'Build' must be a number"),
            ({"Build": True}, "must be a number"),
            ([("Build", 1.0), ("Build", 2.0)], "weighted more than once"),
            (["Build"], "pairs"),
            (5, "must map core labels to weights"),
        ],
    )
    def test_advanced_bad_weights(self, weights: object, message: str) -> None:
        with pytest.raises(TaxonomyError, match=message):
            TaxonomyAdvanced(reweight_core_labels=weights)

    @pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
    def test_advanced_bad_min_confidence(self, value: object) -> None:
        with pytest.raises(TaxonomyError, match="min_confidence_for_mapping"):
            TaxonomyAdvanced(min_confidence_for_mapping=value)

    def test_advanced_min_confidence_int_becomes_float(self) -> None:
        assert TaxonomyAdvanced(min_confidence_for_mapping=1).min_confidence_for_mapping == 1.0

    def test_advanced_bad_aggregation(self) -> None:
        with pytest.raises(TaxonomyError, match=r"'sum' or 'max', got str 'mean'"):
            TaxonomyAdvanced(probability_aggregation="mean")


class TestConfig:
    def test_fallback_bucket_appended_last_with_uncovered_labels(self) -> None:
        config = _config(("Coding", ["Debug", "Build"]), ("Talk", ["Meet"]))
        names = [bucket.name for bucket in config.resolved_buckets]
        assert names == ["Coding", "Talk", FALLBACK_BUCKET]
        assert config.bucket_names == ("Coding", "Talk", "Other")
        other = config.resolved_buckets[-1]
        assert other.core_labels == (
            "BreakIdle", "Communicate", "ReadResearch", "Review", "Write",
        )  # fmt: skip
        assert config.buckets == config.resolved_buckets[:2]

    def test_no_fallback_when_every_label_is_covered(self) -> None:
        config = _config(("All", list(CLASS_ORDER)))
        assert config.bucket_names == ("All",)

    def test_overlapping_buckets_are_allowed(self) -> None:
        config = _config(("Code", ["Build", "Debug"]), ("Focus", ["Build", "Write"]))
        assert config.bucket_names == ("Code", "Focus", "Other")

    def test_duplicate_bucket_names_are_named(self) -> None:
        with pytest.raises(TaxonomyError, match=r"unique; repeated: 'A', 'B'"):
            _config(("A", ["Build"]), ("B", ["Debug"]), ("A", ["Meet"]), ("B", ["Write"]))

    def test_no_buckets(self) -> None:
        with pytest.raises(TaxonomyError, match="at least one bucket"):
            TaxonomyConfig([])

    def test_buckets_must_be_bucket_objects(self) -> None:
        with pytest.raises(TaxonomyError, match=r"buckets\[0\] must be a TaxonomyBucket"):
            TaxonomyConfig(ONE_BUCKET)

    def test_other_is_reserved_when_labels_are_uncovered(self) -> None:
        with pytest.raises(TaxonomyError, match="'Other' is reserved"):
            _config(("Other", ["Build"]))
        # ... but a user bucket named Other is fine when everything is covered.
        labels = list(CLASS_ORDER)
        config = _config(("Coding", labels[:4]), ("Other", labels[4:]))
        assert config.bucket_names == ("Coding", "Other")

    def test_mixed_label_must_differ_from_bucket_names(self) -> None:
        with pytest.raises(TaxonomyError, match="mixed_label_name 'Coding' is also a bucket"):
            _config(("Coding", ["Build"]), reject=TaxonomyReject(mixed_label_name="Coding"))
        with pytest.raises(TaxonomyError, match="mixed_label_name 'Other'"):
            _config(("Coding", ["Build"]), reject=TaxonomyReject(mixed_label_name="Other"))

    def test_label_schema_version(self) -> None:
        with pytest.raises(TaxonomyError, match="label_schema_version must be 'labels_v1'"):
            _config(("A", ["Build"]), label_schema_version="labels_v9")

    def test_sections_must_have_their_type(self) -> None:
        with pytest.raises(TaxonomyError, match="display must be a TaxonomyDisplay"):
            _config(("A", ["Build"]), display={"default_view": "core"})

    def test_equality_hash_and_evolve(self) -> None:
        a = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2}))
        b = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2}))
        assert a == b
        assert hash(a) == hash(b)
        c = attrs.evolve(a, user_id="alice")
        assert c != a
        assert c.user_id == "alice"
        assert {a, b, c} == {a, c}

    def test_default_taxonomy_is_identity(self) -> None:
        config = default_taxonomy()
        assert config.bucket_names == CLASS_ORDER
        assert all(b.core_labels == (b.name,) for b in config.buckets)


# ---------------------------------------------------------------------------
# Plain dicts and YAML files
# ---------------------------------------------------------------------------


def _rich_config() -> TaxonomyConfig:
    return TaxonomyConfig(
        buckets=(
            TaxonomyBucket("Coding", ["Debug", "Build"], color="#112233", description="code"),
            TaxonomyBucket("Réunions & chat", ["Meet", "Communicate"], color="#ABCDEF"),
        ),
        version="2.1",
        user_id="user-7",
        display=TaxonomyDisplay(show_core_labels=True, default_view="core"),
        reject=TaxonomyReject(mixed_label_name="Unsure", include_rejected_in_reports=True),
        advanced=TaxonomyAdvanced(
            probability_aggregation="max",
            min_confidence_for_mapping=0.7,
            reweight_core_labels={"Write": 1.25, "BreakIdle": 0.5},
        ),
    )


class TestDicts:
    def test_round_trip(self) -> None:
        config = _rich_config()
        data = taxonomy_to_dict(config)
        assert data["buckets"][0]["core_labels"] == ["Debug", "Build"]
        assert data["advanced"]["reweight_core_labels"] == {"BreakIdle": 0.5, "Write": 1.25}
        assert taxonomy_from_dict(data) == config

    def test_minimal_dict_uses_defaults(self) -> None:
        config = taxonomy_from_dict({"buckets": ONE_BUCKET})
        assert config == _config(("A", ["Build"]))

    def test_null_means_default(self) -> None:
        config = taxonomy_from_dict(
            {
                "version": None,
                "display": None,
                "advanced": {"reweight_core_labels": None},
                "buckets": [{"name": "A", "core_labels": ["Build"], "color": None}],
            }
        )
        assert config == _config(("A", ["Build"]))

    @pytest.mark.parametrize(("version", "expected"), [(1, "1"), (1.5, "1.5"), ("v3", "v3")])
    def test_numeric_version_becomes_text(self, version: object, expected: str) -> None:
        data = {"version": version, "buckets": ONE_BUCKET}
        assert taxonomy_from_dict(data).version == expected

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({}, "missing required key 'buckets'"),
            ({"buckets": [], "colour": 1}, r"unknown key\(s\) 'colour'"),
            ({"buckets": {"name": "A"}}, "buckets must be a list"),
            ({"buckets": ["A"]}, r"buckets\[0\] must be a mapping"),
            ({"buckets": [{"name": "A"}]}, "missing required key"),
            (
                {"buckets": [{"name": "A", "core_labels": ["Build"], "colour": "#000000"}]},
                r"buckets\[0\]: unknown key\(s\) 'colour'",
            ),
            (
                {"buckets": [{"name": "A", "core_labels": ["Build"]}, {"name": "B",
                 "core_labels": ["Bild"]}]},
                r"buckets\[1\]: bucket 'B': unknown core label 'Bild'",
            ),
            (
                {"buckets": ONE_BUCKET, "display": "dark"},
                "display must be a mapping",
            ),
            (
                {"buckets": ONE_BUCKET,
                 "advanced": {"aggregation": "max"}},
                r"advanced: unknown key\(s\) 'aggregation'",
            ),
            (
                {"buckets": ONE_BUCKET, "version": True},
                "version must be a string",
            ),
        ],
    )  # fmt: skip
    def test_bad_dicts(self, data: dict[str, object], message: str) -> None:
        with pytest.raises(TaxonomyError, match=message):
            taxonomy_from_dict(data)


class TestFiles:
    def test_save_then_load_round_trip(self, tmp_path: Path) -> None:
        config = _rich_config()
        path = save_taxonomy(config, tmp_path / "sub" / "taxonomy.yaml")
        assert path == tmp_path / "sub" / "taxonomy.yaml"
        assert load_taxonomy(path) == config
        assert load_taxonomy(str(path)) == config
        assert os.listdir(path.parent) == ["taxonomy.yaml"]  # no temporary left over
        # The file is plain YAML in the documented layout, version kept as text.
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert list(data) == [
            "version", "label_schema_version", "user_id", "display", "reject",
            "buckets", "advanced",
        ]  # fmt: skip
        assert data["version"] == "2.1"

    def test_save_replaces_existing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "t.yaml"
        path.write_text("old", encoding="utf-8")
        save_taxonomy(default_taxonomy(), path)
        assert load_taxonomy(path) == default_taxonomy()

    def test_failed_save_leaves_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken_replace(src: str, dst: str) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(taxonomy_module.os, "replace", broken_replace)
        with pytest.raises(OSError, match="disk full"):
            save_taxonomy(default_taxonomy(), tmp_path / "t.yaml")
        assert list(tmp_path.iterdir()) == []

    def test_example_file_loads(self) -> None:
        config = load_taxonomy(EXAMPLE_YAML)
        assert config.bucket_names == ("Coding", "Docs & research", "People", "Other")
        assert config.resolved_buckets[-1].core_labels == ("BreakIdle",)
        assert config.advanced.weights == {"Review": 1.5}

    def test_numeric_version_in_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "t.yaml"
        path.write_text("version: 2\nbuckets:\n- {name: A, core_labels: [Build]}\n")
        assert load_taxonomy(path).version == "2"

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.yaml"
        with pytest.raises(ReaderError, match=_at(path) + r".*no such file"):
            load_taxonomy(path)

    def test_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ReaderError, match=re.escape(str(tmp_path))):
            load_taxonomy(tmp_path)

    def test_garbage_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "garbage.yaml"
        path.write_bytes(b"\xff\xfe\x00\x81binary\x00junk")
        with pytest.raises(ReaderError, match=_at(path)):
            load_taxonomy(path)

    def test_unparseable_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text("buckets: [\n  - name: A\n  core_labels: {", encoding="utf-8")
        with pytest.raises(ReaderError, match=_at(path) + r": not valid YAML"):
            load_taxonomy(path)

    def test_list_at_top_level(self, tmp_path: Path) -> None:
        path = tmp_path / "list.yaml"
        path.write_text("- name: A\n  core_labels: [Build]\n", encoding="utf-8")
        with pytest.raises(TaxonomyError, match=_at(path) + r": the top level must be a mapping"):
            load_taxonomy(path)

    def test_empty_file(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.yaml"
        path.write_text("# nothing\n", encoding="utf-8")
        with pytest.raises(TaxonomyError, match=_at(path) + r": the file is empty"):
            load_taxonomy(path)

    def test_unknown_key_names_key_and_file(self, tmp_path: Path) -> None:
        path = tmp_path / "unknown.yaml"
        path.write_text(
            "buckets:\n- {name: A, core_labels: [Build]}\nthreshold: 0.5\n",
            encoding="utf-8",
        )
        with pytest.raises(TaxonomyError, match=_at(path) + r": .*unknown key\(s\) 'threshold'"):
            load_taxonomy(path)

    def test_wrong_type_names_field_and_file(self, tmp_path: Path) -> None:
        path = tmp_path / "types.yaml"
        path.write_text("buckets:\n- {name: A, core_labels: Build}\n", encoding="utf-8")
        with pytest.raises(
            TaxonomyError,
            match=_at(path) + r": buckets\[0\]: bucket 'A': core_labels must be a list",
        ):
            load_taxonomy(path)

    def test_unknown_label_in_file(self, tmp_path: Path) -> None:
        path = tmp_path / "labels.yaml"
        path.write_text("buckets:\n- {name: A, core_labels: [Build, Coding]}\n")
        with pytest.raises(TaxonomyError, match=_at(path) + r": .*unknown core label 'Coding'"):
            load_taxonomy(path)


# ---------------------------------------------------------------------------
# The mapping rules, stated once in plain per-row Python (the reference)
# ---------------------------------------------------------------------------


def reference_bucket_probs(config: TaxonomyConfig, p: np.ndarray) -> tuple[list[str], np.ndarray]:
    """DESIGN section 3 for one row, as earlier taskclf versions computed it:
    bucket names and unrounded, renormalized bucket probabilities."""
    buckets = [(b.name, list(b.core_labels)) for b in config.buckets]
    covered = {label for _, labels in buckets for label in labels}
    uncovered = [label for label in CLASS_ORDER if label not in covered]
    if uncovered:
        buckets.append(("Other", uncovered))
    w = np.ones(len(CLASS_ORDER))
    for label, weight in config.advanced.weights.items():
        w[CLASS_ORDER.index(label)] = weight
    probs = np.asarray(p, dtype=np.float64) * w
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
    bp_total = bucket_probs.sum()
    if bp_total > 0:
        bucket_probs /= bp_total
    return [name for name, _ in buckets], bucket_probs


def reference_resolve(
    config: TaxonomyConfig, p: np.ndarray, rejected: bool
) -> tuple[str, dict[str, float]]:
    """The mapped label and rounded probabilities of one row."""
    if rejected:
        return config.reject.mixed_label_name, {}
    names, bucket_probs = reference_bucket_probs(config, p)
    best = int(np.argmax(bucket_probs))
    rounded = [round(float(v), 6) for v in bucket_probs]
    return names[best], dict(zip(names, rounded, strict=True))


def _bits(probs: dict[str, float]) -> list[tuple[str, str]]:
    """Bucket names and exact float bits, in order (``float.hex`` is exact)."""
    return [(name, float(value).hex()) for name, value in probs.items()]


def assert_matches_reference(
    config: TaxonomyConfig, proba: np.ndarray, rejected: np.ndarray
) -> None:
    resolver = TaxonomyResolver(config)
    ids = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.intp)
    results = resolver.resolve_batch(ids, proba, is_rejected=rejected)
    assert len(results) == len(proba)
    for row, result, flag in zip(proba, results, rejected, strict=True):
        label, probs = reference_resolve(config, row, bool(flag))
        assert result.mapped_label == label
        assert _bits(result.mapped_probs) == _bits(probs)
    # Rounding to 6 decimals hides most last-bit differences, so also
    # compare the unrounded bucket probabilities: this is what pins the
    # summation order.
    unrounded = resolver._bucket_proba(proba)
    for row, got in zip(proba, unrounded, strict=True):
        _, expected = reference_bucket_probs(config, row)
        assert [v.hex() for v in got.tolist()] == [v.hex() for v in expected.tolist()]


# ---------------------------------------------------------------------------
# Hand-worked examples
# ---------------------------------------------------------------------------


def _row(**values: float) -> np.ndarray:
    """A probability row in class order from keyword values (others 0)."""
    row = np.zeros(len(CLASS_ORDER))
    for label, value in values.items():
        row[CLASS_ORDER.index(label)] = value
    return row


class TestResolverExamples:
    def test_fallback_bucket_collects_uncovered_labels(self) -> None:
        config = _config(("Coding", ["Build", "Debug"]), ("Talk", ["Meet", "Communicate"]))
        resolver = TaxonomyResolver(config)
        assert resolver.bucket_names == ("Coding", "Talk", "Other")
        expected_membership = np.zeros((8, 3), dtype=bool)
        for label in ("Build", "Debug"):
            expected_membership[CLASS_ORDER.index(label), 0] = True
        for label in ("Meet", "Communicate"):
            expected_membership[CLASS_ORDER.index(label), 1] = True
        for label in ("BreakIdle", "ReadResearch", "Review", "Write"):
            expected_membership[CLASS_ORDER.index(label), 2] = True
        np.testing.assert_array_equal(resolver.membership, expected_membership)
        result = resolver.resolve(
            0, _row(BreakIdle=0.3, Write=0.25, Build=0.2, Meet=0.15, Debug=0.1)
        )
        assert result.mapped_label == "Other"
        assert result.mapped_probs == {"Coding": 0.3, "Talk": 0.15, "Other": 0.55}

    def test_reweighting_changes_the_winner(self) -> None:
        row = _row(Build=0.4, Meet=0.35, BreakIdle=0.25)
        plain = _config(("Coding", ["Build"]), ("Talk", ["Meet"]))
        assert TaxonomyResolver(plain).resolve(1, row).mapped_label == "Coding"
        # Meet x2: weighted 0.4, 0.7, 0.25 -> total 1.35.
        weighted = attrs.evolve(
            plain, advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2.0})
        )
        result = TaxonomyResolver(weighted).resolve(1, row)
        assert result.mapped_label == "Talk"
        assert result.mapped_probs == {
            "Coding": 0.296296,
            "Talk": 0.518519,
            "Other": 0.185185,
        }

    def test_max_aggregation(self) -> None:
        row = _row(Build=0.2, Debug=0.2, Review=0.1, Meet=0.3, BreakIdle=0.2)
        buckets = (("Coding", ["Build", "Debug", "Review"]), ("Talk", ["Meet"]))
        summed = TaxonomyResolver(_config(*buckets)).resolve(4, row)
        assert summed.mapped_label == "Coding"
        assert summed.mapped_probs == {"Coding": 0.5, "Talk": 0.3, "Other": 0.2}
        maxed = TaxonomyResolver(
            _config(*buckets, advanced=TaxonomyAdvanced(probability_aggregation="max"))
        ).resolve(4, row)
        # Maxima 0.2, 0.3, 0.2 renormalized by their total 0.7.
        assert maxed.mapped_label == "Talk"
        assert maxed.mapped_probs == {
            "Coding": 0.285714,
            "Talk": 0.428571,
            "Other": 0.285714,
        }

    def test_first_bucket_wins_ties(self) -> None:
        row = _row(Build=0.5, Debug=0.5)
        forward = _config(("A", ["Build"]), ("B", ["Debug"]))
        backward = _config(("B", ["Debug"]), ("A", ["Build"]))
        assert TaxonomyResolver(forward).resolve(1, row).mapped_label == "A"
        assert TaxonomyResolver(backward).resolve(1, row).mapped_label == "B"
        # A configured bucket beats the fallback bucket on a tie.
        tie_with_other = _row(Build=0.5, Write=0.5)
        result = TaxonomyResolver(_config(("A", ["Build"]))).resolve(1, tie_with_other)
        assert result.mapped_label == "A"
        assert result.mapped_probs == {"A": 0.5, "Other": 0.5}

    def test_rejected_rows_get_the_mixed_label_and_no_probabilities(self) -> None:
        config = _config(("A", ["Build"]))
        resolver = TaxonomyResolver(config)
        proba = np.array([_row(Build=0.9, Meet=0.1), _row(Build=0.4, Meet=0.6)])
        results = resolver.resolve_batch([1, 4], proba, is_rejected=[False, True])
        assert results == [
            TaxonomyResult("A", {"A": 0.9, "Other": 0.1}),
            TaxonomyResult(MIXED_UNKNOWN, {}),
        ]
        custom = TaxonomyResolver(
            attrs.evolve(config, reject=TaxonomyReject(mixed_label_name="Unsure"))
        )
        assert custom.resolve(1, proba[0], is_rejected=True) == TaxonomyResult("Unsure", {})
        matrix = resolver.resolve_matrix(proba, np.array([False, True]))
        assert isinstance(matrix, MappedMatrix)
        np.testing.assert_array_equal(matrix.bucket_index, [0, -1])
        np.testing.assert_array_equal(matrix.mapped_proba, [[0.9, 0.1], [np.nan, np.nan]])

    def test_rejected_rows_may_hold_nan(self) -> None:
        resolver = TaxonomyResolver(_config(("A", ["Build"])))
        proba = np.array([_row(Build=1.0), np.full(8, np.nan)])
        index, _ = resolver.resolve_matrix(proba, [False, True])
        np.testing.assert_array_equal(index, [0, -1])

    def test_all_zero_row_keeps_zeros_and_maps_to_the_first_bucket(self) -> None:
        resolver = TaxonomyResolver(_config(("A", ["Build"]), ("B", ["Meet"])))
        result = resolver.resolve(0, np.zeros(8))
        assert result == TaxonomyResult("A", {"A": 0.0, "B": 0.0, "Other": 0.0})

    def test_unnormalized_rows_are_renormalized(self) -> None:
        resolver = TaxonomyResolver(_config(("A", ["Build"])))
        result = resolver.resolve(1, _row(Build=3.0, Meet=1.0))
        assert result.mapped_probs == {"A": 0.75, "Other": 0.25}

    def test_overlapping_buckets_are_renormalized(self) -> None:
        config = _config(("Code", ["Build", "Debug"]), ("Focus", ["Build", "Write"]))
        result = TaxonomyResolver(config).resolve(1, _row(Build=0.5, Debug=0.25, Write=0.25))
        # Bucket sums 0.75, 0.75, 0 -> total 1.5.
        assert result == TaxonomyResult("Code", {"Code": 0.5, "Focus": 0.5, "Other": 0.0})

    def test_mapped_probabilities_are_rounded_like_python(self) -> None:
        # 2.5e-06 is stored slightly above the tie: Python rounds it up,
        # numpy's np.round down.
        assert np.round(2.5e-06, 6) == 2e-06
        assert round(2.5e-06, 6) == 3e-06
        assert round_like_python(2.5e-06) == 3e-06
        resolver = TaxonomyResolver(_config(("A", ["Build"])))
        result = resolver.resolve(1, _row(Build=1.0 - 2.5e-06, Meet=2.5e-06))
        expected = reference_resolve(
            resolver.config, _row(Build=1.0 - 2.5e-06, Meet=2.5e-06), False
        )
        assert _bits(result.mapped_probs) == _bits(expected[1])
        assert result.mapped_probs["Other"] == round(2.5e-06, 6) == 3e-06

    def test_min_confidence_for_mapping_is_not_used(self) -> None:
        row = _row(Build=0.3, Meet=0.25, Write=0.25, BreakIdle=0.2)
        low = _config(("A", ["Build"]), advanced=TaxonomyAdvanced(min_confidence_for_mapping=0.0))
        high = attrs.evolve(low, advanced=TaxonomyAdvanced(min_confidence_for_mapping=1.0))
        assert TaxonomyResolver(low).resolve(1, row) == TaxonomyResolver(high).resolve(1, row)

    def test_empty_batch(self) -> None:
        resolver = TaxonomyResolver(_config(("A", ["Build"])))
        index, mapped = resolver.resolve_matrix(np.zeros((0, 8)))
        assert index.shape == (0,)
        assert mapped.shape == (0, 2)
        assert resolver.resolve_batch([], np.zeros((0, 8))) == []

    def test_resolve_agrees_with_resolve_matrix(self) -> None:
        rng = np.random.default_rng(5)
        proba = rng.dirichlet(np.ones(8), size=50)
        resolver = TaxonomyResolver(default_taxonomy())
        index, mapped = resolver.resolve_matrix(proba)
        np.testing.assert_array_equal(index, proba.argmax(axis=1))
        for i, row in enumerate(proba):
            single = resolver.resolve(int(index[i]), row)
            assert single.mapped_label == CLASS_ORDER[index[i]]
            assert list(single.mapped_probs.values()) == mapped[i].tolist()


class TestResolverErrors:
    def test_config_type(self) -> None:
        with pytest.raises(ValueError, match="needs a TaxonomyConfig, got dict"):
            TaxonomyResolver({})  # type: ignore[arg-type]

    @pytest.mark.parametrize("shape", [(3, 7), (3, 9), (8,), (2, 2, 8)])
    def test_wrong_width(self, shape: tuple[int, ...]) -> None:
        resolver = TaxonomyResolver(default_taxonomy())
        with pytest.raises(ProbabilityShapeError, match=r"shape \(n, 8\).*got shape"):
            resolver.resolve_matrix(np.zeros(shape))

    def test_single_row_wrong_length(self) -> None:
        with pytest.raises(ProbabilityShapeError, match=r"got shape \(7,\)"):
            TaxonomyResolver(default_taxonomy()).resolve(0, np.zeros(7))

    def test_non_finite_rows_are_refused(self) -> None:
        proba = np.zeros((4, 8))
        proba[2, 3] = np.nan
        with pytest.raises(InputError, match=r"1 row\(s\) have NaN .*first at row 2"):
            TaxonomyResolver(default_taxonomy()).resolve_matrix(proba)

    def test_is_rejected_shape_and_type(self) -> None:
        resolver = TaxonomyResolver(default_taxonomy())
        with pytest.raises(InputError, match=r"one flag per row, shape \(2,\)"):
            resolver.resolve_matrix(np.zeros((2, 8)), [True])
        with pytest.raises(InputError, match="must be booleans"):
            resolver.resolve_matrix(np.zeros((2, 8)), [0, 1])

    def test_core_label_ids(self) -> None:
        resolver = TaxonomyResolver(default_taxonomy())
        with pytest.raises(InputError, match="one id per row"):
            resolver.resolve_batch([0], np.zeros((2, 8)))
        with pytest.raises(InputError, match=r"class indices in \[0, 7\]"):
            resolver.resolve_batch([0, 8], np.zeros((2, 8)))
        with pytest.raises(InputError, match="class indices"):
            resolver.resolve_batch([0.0, 1.0], np.zeros((2, 8)))


# ---------------------------------------------------------------------------
# Bit-exactness against the per-row reference (hypothesis)
# ---------------------------------------------------------------------------

_probability = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.125, 0.1, 0.2, 1 / 3, 2.5e-06, 0.0078125]),
    st.integers(0, 10**6).map(lambda k: k / 1e6 + 5e-7),
)


@st.composite
def taxonomy_configs(draw: st.DrawFn, max_buckets: int = 10) -> TaxonomyConfig:
    n_buckets = draw(st.integers(1, max_buckets))
    buckets = [
        TaxonomyBucket(
            f"B{i}",
            draw(st.lists(st.sampled_from(CLASS_ORDER), min_size=1, max_size=8, unique=True)),
        )
        for i in range(n_buckets)
    ]
    weights = draw(
        st.dictionaries(
            st.sampled_from(CLASS_ORDER),
            st.one_of(st.floats(1e-3, 1e3), st.sampled_from([0.5, 1.0, 2.0, 3.0])),
            max_size=8,
        )
    )
    aggregation = draw(st.sampled_from(["sum", "max"]))
    return TaxonomyConfig(
        buckets,
        advanced=TaxonomyAdvanced(
            probability_aggregation=aggregation, reweight_core_labels=weights
        ),
    )


_rounding_ties = st.one_of(
    st.integers(0, 10**6).map(lambda k: k / 1e6 + 5e-7),
    st.integers(0, 63).map(lambda k: (2 * k + 1) / 128),
)


@st.composite
def tie_rows(draw: st.DrawFn) -> list[float]:
    """Two classes holding t and 1 - t: with t + (1 - t) == 1.0 a one-class
    bucket gets exactly t (or 1 - t), a value at or next to a rounding tie."""
    t = draw(_rounding_ties)
    first, second = draw(st.lists(st.integers(0, 7), min_size=2, max_size=2, unique=True))
    row = [0.0] * 8
    row[first], row[second] = t, 1.0 - t
    return row


@st.composite
def probability_matrices(draw: st.DrawFn) -> np.ndarray:
    row = st.one_of(st.lists(_probability, min_size=8, max_size=8), tie_rows())
    rows = draw(st.lists(row, max_size=12))
    proba = np.array(rows, dtype=np.float64).reshape(-1, 8)
    if draw(st.booleans()) and len(proba):
        totals = proba.sum(axis=1, keepdims=True)
        proba = np.divide(proba, totals, out=proba.copy(), where=totals > 0)
    return proba


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=taxonomy_configs(), proba=probability_matrices(), data=st.data())
def test_resolver_equals_per_row_reference_bit_for_bit(
    config: TaxonomyConfig, proba: np.ndarray, data: st.DataObject
) -> None:
    rejected = np.array(
        data.draw(st.lists(st.booleans(), min_size=len(proba), max_size=len(proba))),
        dtype=bool,
    )
    assert_matches_reference(config, proba, rejected)


@settings(max_examples=60, deadline=None)
@given(config=taxonomy_configs(), seed=st.integers(0, 2**32 - 1))
def test_resolver_equals_reference_on_realistic_batches(config: TaxonomyConfig, seed: int) -> None:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(rng.uniform(0.05, 2.0, size=8), size=400)
    rejected = rng.random(400) < 0.1
    assert_matches_reference(config, proba, rejected)


@settings(max_examples=15, deadline=None)
@given(
    config=taxonomy_configs(max_buckets=300).filter(lambda c: len(c.buckets) > 128),
    seed=st.integers(0, 2**32 - 1),
)
def test_resolver_equals_reference_with_more_than_128_buckets(
    config: TaxonomyConfig, seed: int
) -> None:
    # More than 128 buckets exercises numpy's recursive pairwise split.
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(8), size=20)
    assert_matches_reference(config, proba, np.zeros(20, dtype=bool))


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
        max_size=300,
    ),
    n_rows=st.integers(1, 3),
)
def test_column_sums_follow_numpy_order(values: list[float], n_rows: int) -> None:
    # Each row is the list rotated, so rows differ; every row must equal
    # numpy's own 1-D sum of that row.
    rows = np.array([values[i:] + values[:i] for i in range(n_rows)], dtype=np.float64)
    rows = rows.reshape(n_rows, len(values))
    columns = [np.ascontiguousarray(rows[:, j]) for j in range(len(values))]
    got = taxonomy_module._sum_like_numpy(columns, n_rows)
    expected = [float(np.asarray(row).sum()).hex() for row in rows]
    assert [float(v).hex() for v in got] == expected


_tie_values = st.one_of(
    st.integers(0, 10**6).map(lambda k: k / 1e6 + 5e-7),
    st.integers(0, 10**6).map(lambda k: (k + 0.5) / 1e6),
    st.integers(0, 63).map(lambda k: (2 * k + 1) / 128),  # exact binary ties
)


@settings(max_examples=1000, deadline=None)
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(0.0, 1.0),
        _tie_values,
        _tie_values.map(lambda v: float(np.nextafter(v, 2.0))),
        _tie_values.map(lambda v: float(np.nextafter(v, -1.0))),
        _tie_values.map(lambda v: -v),
    )
)
@example(0.0078125)
@example(2.5e-06)
@example(-0.0)
@example(1e300)
def test_round_like_python_matches_round_bit_for_bit(value: float) -> None:
    got = float(round_like_python(np.array([value, value]))[1])
    expected = round(value, 6)
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got.hex() == expected.hex()


@pytest.mark.parametrize("ndigits", [0, 2, 4, 6, 10])
def test_round_like_python_other_digits(ndigits: int) -> None:
    rng = np.random.default_rng(ndigits)
    values = np.concatenate(
        [
            rng.random(2000) * 10,
            (np.arange(2000) + 0.5) / 10.0**ndigits,
            np.arange(1, 64, 2) / 128,
        ]
    )
    got = round_like_python(values, ndigits)
    assert [v.hex() for v in got.tolist()] == [round(float(v), ndigits).hex() for v in values]


def test_round_like_python_keeps_shape_for_any_memory_layout() -> None:
    # Near-ties where rint(v * 1e6) / 1e6 differs from round(v, 6): only the
    # slow path gets them right, so its results must reach the output.
    candidates = (np.arange(200) + 0.5) / 1e6
    differ = [v for v in candidates.tolist() if np.rint(v * 1e6) / 1e6 != round(v, 6)]
    ties = np.array(differ[:6]).reshape(2, 3)
    for values in (ties, np.asfortranarray(ties), ties.T, ties[:, ::2]):
        got = round_like_python(values)
        assert got.shape == values.shape
        assert got.tolist() == [[round(float(v), 6) for v in row] for row in values]
    scalar = round_like_python(0.0078125)
    assert scalar.shape == ()
    assert float(scalar) == 0.007812


def test_round_like_python_exact_binary_ties() -> None:
    values = np.arange(1, 128, 2) / 128  # x * 1e6 ends in exactly .5
    expected = [round(float(v), 6) for v in values]
    assert round_like_python(values).tolist() == expected
    assert round_like_python(0.0078125) == 0.007812  # half to even


# ---------------------------------------------------------------------------
# TaxonomyMapper, the pipeline stage
# ---------------------------------------------------------------------------

CODING = _config(("Coding", ["Build", "Debug", "Review"]), ("Talk", ["Communicate", "Meet"]))
MAPPED_COLUMNS = [
    "mapped_label",
    "mapped_proba_Coding",
    "mapped_proba_Talk",
    "mapped_proba_Other",
]


def _frame(n: int = 6, seed: int = 0, rejected: bool = True) -> pd.DataFrame:
    """A frame as the merger leaves it: caller columns, probabilities, flags, label."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(8), size=n)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i % 2}" for i in range(n)],
            "bucket_start_ts": pd.date_range("2025-01-01", periods=n, freq="60s", tz="UTC"),
        },
        index=pd.Index(rng.permutation(np.arange(100, 100 + n)), name="row"),
    )
    for column, values in zip(PROBA_COLUMNS, proba.T, strict=True):
        frame[column] = values
    if rejected:
        frame["is_rejected"] = proba.max(axis=1) < 0.3
    frame["label"] = pd.Categorical([CLASS_ORDER[i] for i in proba.argmax(axis=1)])
    return frame


class TestMapper:
    def test_adds_mapped_columns_matching_the_resolver(self) -> None:
        frame = _frame(40)
        assert frame["is_rejected"].any()
        out = TaxonomyMapper(CODING).fit_transform(frame)
        assert list(out.columns) == [*frame.columns, *MAPPED_COLUMNS]
        expected = TaxonomyResolver(CODING).resolve_batch(
            frame[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1),
            frame[list(PROBA_COLUMNS)].to_numpy(),
            is_rejected=frame["is_rejected"].to_numpy(),
        )
        assert out["mapped_label"].tolist() == [r.mapped_label for r in expected]
        for i, result in enumerate(expected):
            values = out.iloc[i][MAPPED_COLUMNS[1:]].to_numpy(dtype=float)
            if result.mapped_probs:
                assert values.tolist() == list(result.mapped_probs.values())
            else:
                assert np.isnan(values).all()

    def test_column_types(self) -> None:
        out = TaxonomyMapper(CODING).fit_transform(_frame())
        label = out["mapped_label"]
        assert isinstance(label.dtype, pd.CategoricalDtype)
        assert label.cat.categories.tolist() == ["Coding", "Talk", "Other", MIXED_UNKNOWN]
        assert all(out[c].dtype == np.float64 for c in MAPPED_COLUMNS[1:])

    def test_rejected_rows(self) -> None:
        frame = _frame(3, rejected=False).assign(is_rejected=[True, False, True])
        config = attrs.evolve(CODING, reject=TaxonomyReject(mixed_label_name="Unsure"))
        out = TaxonomyMapper(config).fit_transform(frame)
        assert out["mapped_label"].iloc[[0, 2]].tolist() == ["Unsure", "Unsure"]
        assert out["mapped_label"].iloc[1] != "Unsure"
        assert out.iloc[[0, 2]][MAPPED_COLUMNS[1:]].isna().all().all()
        assert out.iloc[1][MAPPED_COLUMNS[1:]].notna().all()

    def test_without_is_rejected_nothing_is_rejected(self) -> None:
        out = TaxonomyMapper(CODING).fit_transform(_frame(20, rejected=False))
        assert MIXED_UNKNOWN not in set(out["mapped_label"])
        assert out[MAPPED_COLUMNS[1:]].notna().all().all()

    def test_does_not_mutate_input(self) -> None:
        frame = _frame(12)
        before = frame.copy(deep=True)
        out = TaxonomyMapper(CODING).fit_transform(frame)
        pd.testing.assert_frame_equal(frame, before)
        assert list(frame.columns) == list(before.columns)
        # The result is a new frame; writing to it leaves the input alone.
        out.loc[out.index[0], PROBA_COLUMNS[0]] = 42.0
        pd.testing.assert_frame_equal(frame, before)

    def test_keeps_caller_columns_rows_and_index(self) -> None:
        frame = _frame(10)
        out = TaxonomyMapper(CODING).fit_transform(frame)
        pd.testing.assert_index_equal(out.index, frame.index)
        pd.testing.assert_frame_equal(out[frame.columns], frame)

    def test_row_order_is_irrelevant(self) -> None:
        frame = _frame(30)
        mapper = TaxonomyMapper(CODING).fit(frame)
        shuffled = frame.sample(frac=1.0, random_state=3)
        pd.testing.assert_frame_equal(
            mapper.transform(shuffled).loc[frame.index], mapper.transform(frame)
        )

    def test_empty_frame(self) -> None:
        frame = _frame(0)
        out = TaxonomyMapper(CODING).fit_transform(frame)
        assert len(out) == 0
        assert list(out.columns) == [*frame.columns, *MAPPED_COLUMNS]
        assert isinstance(out["mapped_label"].dtype, pd.CategoricalDtype)
        assert out["mapped_proba_Coding"].dtype == np.float64

    def test_earlier_mapping_is_replaced(self) -> None:
        first = TaxonomyMapper(CODING).fit_transform(_frame())
        out = TaxonomyMapper(default_taxonomy()).fit_transform(first)
        stale = [c for c in out.columns if c in MAPPED_COLUMNS[1:]]
        assert stale == []
        assert out.columns.tolist().count("mapped_label") == 1
        assert out["mapped_label"].cat.categories.tolist()[:8] == list(CLASS_ORDER)

    def test_missing_probability_columns_are_listed(self) -> None:
        frame = _frame().drop(columns=["proba_Meet", "proba_Write"])
        with pytest.raises(
            MissingColumnsError,
            match=r"TaxonomyMapper: missing 2 .*'proba_Meet', 'proba_Write'",
        ):
            TaxonomyMapper(CODING).fit_transform(frame)

    def test_bad_column_types(self) -> None:
        frame = _frame().astype({"proba_Meet": str})
        with pytest.raises(ColumnTypeError, match="'proba_Meet' must hold probabilities"):
            TaxonomyMapper(CODING).transform(frame)
        flags = _frame().assign(is_rejected=["yes"] * 6)
        with pytest.raises(ColumnTypeError, match="'is_rejected' must hold booleans"):
            TaxonomyMapper(CODING).transform(flags)
        missing = _frame().assign(is_rejected=pd.array([True, None] * 3, dtype="boolean"))
        with pytest.raises(ColumnTypeError, match="3 missing value"):
            TaxonomyMapper(CODING).transform(missing)

    def test_nullable_boolean_flags_are_accepted(self) -> None:
        frame = _frame().assign(is_rejected=pd.array([True, False] * 3, dtype="boolean"))
        out = TaxonomyMapper(CODING).transform(frame)
        assert out["mapped_label"].tolist()[::2] == [MIXED_UNKNOWN] * 3

    def test_nan_probability_on_an_accepted_row(self) -> None:
        frame = _frame(rejected=False)
        frame.loc[frame.index[4], "proba_Build"] = np.nan
        with pytest.raises(InputError, match="first at row 4"):
            TaxonomyMapper(CODING).transform(frame)

    def test_not_a_frame(self) -> None:
        with pytest.raises(InputError, match="expected a pandas DataFrame, got ndarray"):
            TaxonomyMapper(CODING).transform(np.zeros((2, 8)))  # type: ignore[arg-type]

    def test_predict_returns_the_core_label(self) -> None:
        frame = _frame()
        mapper = TaxonomyMapper(CODING)
        np.testing.assert_array_equal(mapper.predict(frame), frame["label"].to_numpy())
        with pytest.raises(MissingColumnsError, match=r"TaxonomyMapper.predict.*'label'"):
            mapper.predict(frame.drop(columns="label"))

    def test_in_a_pipeline_predict_is_unchanged(self) -> None:
        frame = _frame(15)
        pipeline = Pipeline([("taxonomy", TaxonomyMapper(CODING))]).fit(frame)
        np.testing.assert_array_equal(pipeline.predict(frame), frame["label"].to_numpy())
        assert "mapped_label" in pipeline.transform(frame).columns

    def test_ready_without_fit_when_taxonomy_is_given(self) -> None:
        out = TaxonomyMapper(CODING).transform(_frame())
        assert "mapped_proba_Talk" in out.columns

    def test_none_means_default_taxonomy_after_fit(self) -> None:
        mapper = TaxonomyMapper()
        with pytest.raises(NotFittedError):
            mapper.transform(_frame())
        mapper.fit(_frame())
        assert mapper.bucket_names_ == CLASS_ORDER
        out = mapper.transform(_frame(rejected=False))
        assert out["mapped_label"].tolist() == out["label"].tolist()

    def test_fit_sets_learned_attributes(self) -> None:
        mapper = TaxonomyMapper(CODING)
        assert not hasattr(mapper, "resolver_")
        assert mapper.fit(None) is mapper
        assert mapper.bucket_names_ == ("Coding", "Talk", "Other")
        assert mapper.resolver_.config == CODING

    def test_bad_taxonomy_type(self) -> None:
        with pytest.raises(InvalidParameterError, match="taxonomy must be a TaxonomyConfig"):
            TaxonomyMapper("taxonomy.yaml").fit(_frame())  # type: ignore[arg-type]

    def test_init_stores_only_its_argument(self) -> None:
        mapper = TaxonomyMapper(CODING)
        assert mapper.get_params() == {"taxonomy": CODING}
        assert vars(mapper) == {"taxonomy": CODING}

    def test_clone_get_params_set_params(self) -> None:
        mapper = TaxonomyMapper(CODING).fit(_frame())
        cloned = clone(mapper)
        assert cloned.get_params() == {"taxonomy": CODING}
        assert not hasattr(cloned, "resolver_")
        other = _config(("Focus", ["Build", "Write"]))
        assert mapper.set_params(taxonomy=other) is mapper
        assert mapper.get_params()["taxonomy"] == other
        # A changed taxonomy takes effect even before re-fitting.
        out = mapper.transform(_frame())
        assert "mapped_proba_Focus" in out.columns
        assert "mapped_proba_Coding" not in out.columns
        pipeline = Pipeline([("taxonomy", TaxonomyMapper())])
        pipeline.set_params(taxonomy__taxonomy=CODING)
        assert clone(pipeline).get_params()["taxonomy__taxonomy"] == CODING

    def test_pickle_round_trip(self) -> None:
        frame = _frame(20)
        mapper = TaxonomyMapper(CODING).fit(frame)
        restored = pickle.loads(pickle.dumps(mapper))
        pd.testing.assert_frame_equal(restored.transform(frame), mapper.transform(frame))
        assert copy.deepcopy(CODING) == CODING

    def test_tags(self) -> None:
        assert TaxonomyMapper(CODING).__sklearn_tags__().requires_fit is False
        assert TaxonomyMapper().__sklearn_tags__().requires_fit is True


# Bad input (contract: a specific error naming the problem)

# --------------------------------------------------------------------------
# Taxonomies: files, configurations and the taxonomy argument
# --------------------------------------------------------------------------

GOOD_BUCKET = "  - name: Coding\n    core_labels: [Build, Debug]\n"
TAXONOMY_FILES = {
    "an unknown core label": (
        "buckets:\n  - name: Coding\n    core_labels: [Build, Coding]\n",
        TaxonomyError,
        ("unknown core label", "'Coding'"),
    ),
    "a lower-case core label": (
        "buckets:\n  - name: Coding\n    core_labels: [build]\n",
        TaxonomyError,
        ("'build'",),
    ),
    "Mixed/Unknown as a core label": (
        "buckets:\n  - name: Odd\n    core_labels: [Mixed/Unknown]\n",
        TaxonomyError,
        ("'Mixed/Unknown'",),
    ),
    "a bad colour": (
        "buckets:\n  - name: Coding\n    core_labels: [Build]\n    color: red\n",
        TaxonomyError,
        ("color", "'red'"),
    ),
    "two buckets of one name": (
        "buckets:\n" + GOOD_BUCKET + GOOD_BUCKET.replace("Build, Debug", "Review"),
        TaxonomyError,
        ("unique", "Coding"),
    ),
    "no buckets": ("version: 1\n", TaxonomyError, ("'buckets'",)),
    "an unknown key": (
        "buckets:\n" + GOOD_BUCKET + "colour_theme: dark\n",
        TaxonomyError,
        ("'colour_theme'",),
    ),
    "a list at the top": ("- Build\n- Debug\n", TaxonomyError, ("mapping", "list")),
    "an empty file": ("", TaxonomyError, ("empty",)),
    "invalid YAML": ("buckets: [\n  - name: {\n", ReaderError, ("not valid YAML", "line")),
    "a negative weight": (
        "buckets:\n" + GOOD_BUCKET + "advanced:\n  reweight_core_labels: {Build: -1}\n",
        TaxonomyError,
        ("'Build'", "-1"),
    ),
}


@pytest.mark.parametrize(
    ("text", "error", "words"), TAXONOMY_FILES.values(), ids=TAXONOMY_FILES.keys()
)
def test_taxonomy_file_is_refused_naming_the_file(text, error, words, tmp_path):
    path = tmp_path / "my taxonomy.yaml"
    path.write_text(text, encoding="utf-8")
    refused(lambda: load_taxonomy(path), error, str(path), *words)


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"\xff\xfe\x00garbage\x80", "not UTF-8"), (None, "no such file")],
    ids=["binary garbage", "a missing file"],
)
def test_unreadable_taxonomy_file_is_refused_naming_the_file(content, words, tmp_path):
    path = tmp_path / "taxonomy.yaml"
    if content is not None:
        path.write_bytes(content)
    refused(lambda: load_taxonomy(path), ReaderError, str(path), words)


def test_unknown_label_in_a_taxonomy_built_in_python():
    refused(
        lambda: TaxonomyConfig([TaxonomyBucket("Coding", ["Build", "Programming"])]),
        TaxonomyError,
        "'Programming'",
        "Coding",
    )
    refused(
        lambda: taxonomy_from_dict({"buckets": [{"name": "X", "core_labels": ["Slack"]}]}),
        TaxonomyError,
        "'Slack'",
    )


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
