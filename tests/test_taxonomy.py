"""Tests of taskclf.taxonomy: configuration values, YAML files, the resolver
and the TaxonomyMapper pipeline stage."""

from __future__ import annotations

import doctest
import os
import re
from pathlib import Path

import attrs
import pytest
import yaml

import taskclf.taxonomy as taxonomy_module
from taskclf.core.types import CLASS_ORDER, MIXED_UNKNOWN
from taskclf.exceptions import ReaderError, TaxonomyError
from taskclf.taxonomy import (
    FALLBACK_BUCKET,
    TaxonomyAdvanced,
    TaxonomyBucket,
    TaxonomyConfig,
    TaxonomyDisplay,
    TaxonomyReject,
    default_taxonomy,
    load_taxonomy,
    save_taxonomy,
    taxonomy_from_dict,
    taxonomy_to_dict,
)

EXAMPLE_YAML = (
    Path(__file__).resolve().parent.parent / "docs" / "examples" / "taxonomy.yaml"
)


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
        with pytest.raises(
            TaxonomyError, match=r"bucket 'Coding'.*unknown core label 'Cod'"
        ):
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
        with pytest.raises(
            TaxonomyError, match=r"bucket 'Coding': color must be a #RRGGBB"
        ):
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
            TaxonomyAdvanced(reweight_core_labels=weights)  # type: ignore[arg-type]

    @pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "0.5", True])
    def test_advanced_bad_min_confidence(self, value: object) -> None:
        with pytest.raises(TaxonomyError, match="min_confidence_for_mapping"):
            TaxonomyAdvanced(min_confidence_for_mapping=value)  # type: ignore[arg-type]

    def test_advanced_min_confidence_int_becomes_float(self) -> None:
        assert (
            TaxonomyAdvanced(min_confidence_for_mapping=1).min_confidence_for_mapping == 1.0
        )

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
            TaxonomyConfig(ONE_BUCKET)  # type: ignore[list-item]

    def test_other_is_reserved_when_labels_are_uncovered(self) -> None:
        with pytest.raises(TaxonomyError, match="'Other' is reserved"):
            _config(("Other", ["Build"]))
        # ... but a user bucket named Other is fine when everything is covered.
        labels = list(CLASS_ORDER)
        config = _config(("Coding", labels[:4]), ("Other", labels[4:]))
        assert config.bucket_names == ("Coding", "Other")

    def test_mixed_label_must_differ_from_bucket_names(self) -> None:
        with pytest.raises(
            TaxonomyError, match="mixed_label_name 'Coding' is also a bucket"
        ):
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
        a = _config(
            ("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2})
        )
        b = _config(
            ("A", ["Build"]), advanced=TaxonomyAdvanced(reweight_core_labels={"Meet": 2})
        )
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
            TaxonomyBucket(
                "Coding", ["Debug", "Build"], color="#112233", description="code"
            ),
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

    @pytest.mark.parametrize(
        ("version", "expected"), [(1, "1"), (1.5, "1.5"), ("v3", "v3")]
    )
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
        with pytest.raises(
            TaxonomyError, match=_at(path) + r": the top level must be a mapping"
        ):
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
        with pytest.raises(
            TaxonomyError, match=_at(path) + r": .*unknown key\(s\) 'threshold'"
        ):
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
        with pytest.raises(
            TaxonomyError, match=_at(path) + r": .*unknown core label 'Coding'"
        ):
            load_taxonomy(path)
