"""Bundle files: round trips, metadata, and every refusal before unpickling."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import pickle
import warnings
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import (
    make_frame,
    refused,
    train_booster,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import taskclf.bundle as bundle_module
from taskclf import (
    TemperatureCalibrator,
    build_pipeline,
    load_bundle,
    read_bundle_info,
    save_bundle,
)
from taskclf.bundle import (
    _PREFIX,
    FORMAT_VERSION,
    MAGIC,
    check_compatibility,
    decode_bundle,
    encode_bundle,
    library_versions,
    training_fingerprint,
)
from taskclf.core.schema import SCHEMA_V1, SCHEMA_V2
from taskclf.core.types import CLASS_ORDER
from taskclf.exceptions import (
    BundleError,
    BundleVersionWarning,
    InvalidParameterError,
    SchemaMismatchError,
)
from taskclf.taxonomy import taxonomy_from_dict


@pytest.fixture(scope="module")
def pipeline(booster_v1, encoders_v1):
    return build_pipeline(
        booster_v1,
        encoders_v1,
        reject_threshold=0.45,
        smooth_window=5,
        calibrator=TemperatureCalibrator(1.5),
    )


@pytest.fixture(scope="module")
def saved(pipeline, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "model.taskclf"
    save_bundle(pipeline, path, metadata={"team": "data", "notes": ["a", 1]})
    return path


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything is unpickled."""

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled although the file should have been refused")

    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(bundle_module.joblib, "load", refuse)


def rewrite(path, data: bytes, target):
    target.write_bytes(data)
    return target


def with_header(saved, tmp_path, change):
    """A copy of ``saved`` whose header ``change`` edits, with valid digests."""
    header, payload = decode_bundle(saved.read_bytes(), "test")
    change(header)
    return rewrite(saved, encode_bundle(header, payload), tmp_path / "edited.taskclf")


def test_round_trip_gives_identical_output(pipeline, saved, features_v1):
    loaded = load_bundle(saved)
    assert isinstance(loaded, Pipeline)
    pd.testing.assert_frame_equal(loaded.transform(features_v1), pipeline.transform(features_v1))
    assert loaded.get_params()["reject__threshold"] == 0.45
    assert loaded.get_params()["smooth__window"] == 5


def test_metadata_records_versions_schema_labels_and_params(saved):
    meta = read_bundle_info(saved).metadata
    versions = library_versions()
    for name in ("taskclf", "scikit-learn", "lightgbm", "numpy", "pandas"):
        assert meta.versions[name] == versions[name]
    assert meta.schema_version == "v1"
    assert meta.schema_hash == SCHEMA_V1.schema_hash == "4077fe0dba70"
    assert meta.label_set == CLASS_ORDER
    created = dt.datetime.fromisoformat(meta.created_at)
    assert created.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(minutes=10)
    assert meta.steps == ("encode", "predict", "calibrate", "reject", "smooth", "segment", "merge")
    assert meta.params["reject__threshold"] == 0.45
    assert meta.params["smooth__window"] == 5
    assert "encode__categories" not in meta.params  # vocabularies live in the payload
    assert meta.extra == {"team": "data", "notes": ["a", 1]}
    # A pre-trained booster was not fitted through taskclf: no training facts.
    assert meta.training_fingerprint is None
    assert meta.training_metrics is None


def test_info_digests_match_the_file(saved, no_unpickling):
    info = read_bundle_info(saved)
    data = saved.read_bytes()
    assert info.file_sha256 == hashlib.sha256(data).hexdigest()
    assert data.startswith(MAGIC)
    assert info.payload_bytes < len(data)
    assert hashlib.sha256(data[-info.payload_bytes :]).hexdigest() == info.payload_sha256


def test_pinned_digest(saved, tmp_path):
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert isinstance(load_bundle(saved, sha256=digest.upper()), Pipeline)
    with pytest.raises(BundleError, match="SHA-256 mismatch") as info:
        load_bundle(saved, sha256="0" * 64)
    assert str(saved) in str(info.value)
    with pytest.raises(InvalidParameterError, match="64 hex digits"):
        load_bundle(saved, sha256="abc")


@pytest.mark.parametrize(
    "where", [0, 5, 14, 16, 18, 25, "header-mid", "digest", "payload-0", "payload-mid", "last"]
)
def test_flipped_byte_is_refused_before_unpickling(saved, tmp_path, where, no_unpickling):
    data = bytearray(saved.read_bytes())
    header_length = int.from_bytes(data[16:20], "big")
    positions = {
        "header-mid": 20 + header_length // 2,
        "digest": 20 + header_length + 7,
        "payload-0": 20 + header_length + 32,
        "payload-mid": 20 + header_length + 32 + (len(data) - 20 - header_length - 32) // 2,
        "last": len(data) - 1,
    }
    offset = positions.get(where, where)
    data[offset] ^= 0x5A
    path = rewrite(saved, bytes(data), tmp_path / "flipped.taskclf")
    with pytest.raises(BundleError) as error:
        load_bundle(path)
    assert "flipped.taskclf" in str(error.value)
    with pytest.raises(BundleError):
        read_bundle_info(path)


@pytest.mark.parametrize("keep", [1, 10, 15, 19, 40, "header", "payload", "all-but-one"])
def test_truncated_file_is_refused(saved, tmp_path, keep, no_unpickling):
    data = saved.read_bytes()
    header_length = int.from_bytes(data[16:20], "big")
    lengths = {
        "header": 20 + header_length + 10,
        "payload": 20 + header_length + 32 + 100,
        "all-but-one": len(data) - 1,
    }
    path = rewrite(saved, data[: lengths.get(keep, keep)], tmp_path / "cut.taskclf")
    with pytest.raises(BundleError, match="truncated|corrupt") as error:
        load_bundle(path)
    assert "cut.taskclf" in str(error.value)


def test_appended_bytes_are_refused(saved, tmp_path, no_unpickling):
    path = rewrite(saved, saved.read_bytes() + b"extra", tmp_path / "long.taskclf")
    with pytest.raises(BundleError, match="payload has"):
        load_bundle(path)


def test_swapped_payload_is_refused(saved, pipeline, tmp_path, no_unpickling):
    """A valid header with another pickle after it: the payload digest differs."""
    data = saved.read_bytes()
    header_length = int.from_bytes(data[16:20], "big")
    head = data[: 20 + header_length + 32]
    other = tmp_path / "other.joblib"
    joblib.dump(StandardScaler(), other)
    payload = other.read_bytes()
    header = json.loads(data[20 : 20 + header_length])
    header["payload"]["length"] = len(payload)  # even a consistent length
    forged = encode_bundle(header, payload)
    path = rewrite(saved, forged, tmp_path / "forged.taskclf")
    with pytest.raises(BundleError, match="payload SHA-256 mismatch"):
        load_bundle(path)
    path = rewrite(saved, head + payload, tmp_path / "forged2.taskclf")
    with pytest.raises(BundleError, match="forged2.taskclf"):
        load_bundle(path)


def test_empty_missing_directory_and_foreign_files(saved, pipeline, tmp_path, no_unpickling):
    empty = tmp_path / "empty.taskclf"
    empty.write_bytes(b"")
    with pytest.raises(BundleError, match="is empty"):
        load_bundle(empty)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope.taskclf")
    with pytest.raises(BundleError, match="is a directory"):
        load_bundle(tmp_path)
    text = tmp_path / "notes.taskclf"
    text.write_text("just some text, long enough to hold a header")
    with pytest.raises(BundleError, match="not a taskclf bundle"):
        load_bundle(text)
    plain = tmp_path / "plain.joblib"
    with open(plain, "wb") as handle:
        handle.write(b"\x80\x04")  # a pickle's first bytes, then anything
        handle.write(saved.read_bytes()[100:])
    with pytest.raises(BundleError, match="not a taskclf bundle"):
        load_bundle(plain)
    prefix = tmp_path / "prefix.taskclf"
    prefix.write_bytes(MAGIC[:6])
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(prefix)


def test_a_plain_joblib_pickle_is_not_a_bundle(pipeline, tmp_path, no_unpickling):
    path = tmp_path / "pipeline.joblib"
    with open(path, "wb") as handle:
        joblib.dump(pipeline, handle)
    with pytest.raises(BundleError, match="not a taskclf bundle"):
        load_bundle(path)


def test_unsupported_format_version_and_absurd_header(saved, tmp_path, no_unpickling):
    data = bytearray(saved.read_bytes())
    data[14:16] = (7).to_bytes(2, "big")
    with pytest.raises(BundleError, match="format version 7"):
        load_bundle(rewrite(saved, bytes(data), tmp_path / "v7.taskclf"))
    data = bytearray(saved.read_bytes())
    data[16:20] = (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(BundleError, match="absurd"):
        load_bundle(rewrite(saved, bytes(data), tmp_path / "huge.taskclf"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["metadata"].update(schema_hash="000000000000"), "schema hash mismatch"),
        (lambda h: h["metadata"].update(schema_version="v9"), "unknown schema version"),
        (lambda h: h["metadata"].update(label_set=list(CLASS_ORDER[:7])), "label set mismatch"),
        (
            lambda h: h["metadata"].update(label_set=[*CLASS_ORDER[:7], "Sleep"]),
            "label set mismatch",
        ),
        (lambda h: h["metadata"]["versions"].pop("numpy"), "records no numpy version"),
        (lambda h: h["metadata"].pop("schema_hash"), "lacks field"),
        (lambda h: h["metadata"].update(label_set="Build"), "list of strings"),
        (lambda h: h["metadata"].update(surprise=1), "unknown field"),
        (lambda h: h["metadata"].update(training_fingerprint="abc"), "not a SHA-256"),
        (lambda h: h["payload"].update(serializer="pickle"), "payload description"),
        (lambda h: h.update(metadata=[1, 2]), "JSON object"),
    ],
)
def test_metadata_mismatch_is_refused_before_unpickling(
    saved, tmp_path, change, message, no_unpickling
):
    path = with_header(saved, tmp_path, change)
    with pytest.raises(BundleError, match=message) as error:
        load_bundle(path)
    assert "edited.taskclf" in str(error.value)


def _bump(version: str, part: int, by: int = 1) -> str:
    numbers = [int(p) for p in version.split(".")[:3]]
    numbers += [0] * (3 - len(numbers))
    numbers[part] += by
    return ".".join(map(str, numbers))


@pytest.mark.parametrize("library", ["numpy", "pandas", "scikit-learn", "lightgbm"])
def test_major_version_difference_is_refused(saved, tmp_path, library, no_unpickling):
    now = library_versions()[library]
    path = with_header(
        saved, tmp_path, lambda h: h["metadata"]["versions"].update({library: _bump(now, 0)})
    )
    with pytest.raises(BundleError, match=f"written with {library} .*incompatible"):
        load_bundle(path)


def test_taskclf_minor_difference_is_refused_while_0x(saved, tmp_path, no_unpickling):
    path = with_header(saved, tmp_path, lambda h: h["metadata"]["versions"].update(taskclf="0.4.2"))
    with pytest.raises(BundleError, match="taskclf 0.4.2"):
        load_bundle(path)


@pytest.mark.parametrize(("library", "part"), [("numpy", 1), ("pandas", 2), ("scikit-learn", 2)])
def test_minor_or_patch_difference_warns_and_loads(saved, tmp_path, features_v1, library, part):
    now = library_versions()[library]
    older = _bump(now, part, by=-1) if int(now.split(".")[part]) > 0 else _bump(now, part)
    path = with_header(
        saved, tmp_path, lambda h: h["metadata"]["versions"].update({library: older})
    )
    with pytest.warns(BundleVersionWarning, match=library):
        loaded = load_bundle(path)
    assert len(loaded.predict(features_v1)) == len(features_v1)


def test_same_versions_load_without_warning(saved):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_bundle(saved)


def test_metadata_disagreeing_with_the_model_is_refused(saved, tmp_path):
    """The header claims schema v2, the pickled booster is a v1 model."""

    def claim_v2(header):
        header["metadata"].update(schema_version="v2", schema_hash=SCHEMA_V2.schema_hash)

    with pytest.raises(BundleError, match="metadata says schema v2 but the model is a v1"):
        load_bundle(with_header(saved, tmp_path, claim_v2))


def test_payload_of_another_kind_is_refused_after_verification(saved, tmp_path):
    """A correctly digested payload that is not a taskclf pipeline."""
    header, _ = decode_bundle(saved.read_bytes(), "test")
    buffer = tmp_path / "scaler.joblib"
    joblib.dump(StandardScaler(), buffer)
    payload = buffer.read_bytes()
    header["payload"].update(sha256=hashlib.sha256(payload).hexdigest(), length=len(payload))
    path = rewrite(saved, encode_bundle(header, payload), tmp_path / "scaler.taskclf")
    with pytest.raises(BundleError, match="expected a taskclf pipeline"):
        load_bundle(path)
    garbage = b"\x80\x04not a pickle at all"
    header["payload"].update(sha256=hashlib.sha256(garbage).hexdigest(), length=len(garbage))
    path = rewrite(saved, encode_bundle(header, garbage), tmp_path / "garbage.taskclf")
    with pytest.raises(BundleError, match="cannot be unpickled"):
        load_bundle(path)


def test_save_refusals_leave_no_file(pipeline, tmp_path):
    target = tmp_path / "out.taskclf"
    with pytest.raises(BundleError, match="expected a taskclf pipeline"):
        save_bundle(StandardScaler(), target)
    with pytest.raises(BundleError, match="expected a taskclf pipeline"):
        save_bundle(Pipeline([("scale", StandardScaler())]), target)
    with pytest.raises(InvalidParameterError, match="JSON-ready"):
        save_bundle(pipeline, target, metadata={"when": dt.datetime.now()})
    with pytest.raises(InvalidParameterError):
        save_bundle(pipeline, target, metadata={"bad": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_atomically(pipeline, saved, tmp_path):
    target = tmp_path / "model.taskclf"
    save_bundle(pipeline, target, metadata={"version": 1})
    with pytest.raises(InvalidParameterError):
        save_bundle(pipeline, target, metadata={"version": object()})
    assert read_bundle_info(target).metadata.extra == {"version": 1}
    save_bundle(pipeline, target, metadata={"version": 2})
    assert read_bundle_info(target).metadata.extra == {"version": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.taskclf"]


def test_check_compatibility_accepts_own_metadata(saved):
    check_compatibility(read_bundle_info(saved).metadata, "here")


def test_training_fingerprint_tracks_content_and_order():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    labels = ["Build", "Debug", "Meet"]
    base = training_fingerprint(frame, labels)
    assert base == training_fingerprint(frame.copy(), list(labels))
    assert base == training_fingerprint(frame.set_axis([7, 8, 9]), labels)  # index ignored
    assert base != training_fingerprint(frame.iloc[::-1], labels)
    assert base != training_fingerprint(frame.assign(a=[1.0, 2.0, 3.5]), labels)
    assert base != training_fingerprint(frame, ["Build", "Debug", "Write"])
    assert base != training_fingerprint(frame.rename(columns={"a": "c"}), labels)
    assert len(base) == 64 and int(base, 16) >= 0
    assert np.all(frame["a"] == [1.0, 2.0, 3.0])


def test_round_trip_with_a_taxonomy_step(pipeline, features_v1, tmp_path):
    from taskclf.taxonomy import TaxonomyMapper

    config = taxonomy_from_dict(
        {"buckets": [{"name": "Focus", "core_labels": ["Build", "Write"], "color": "#000000"}]}
    )
    mapped = Pipeline([*pipeline.steps, ("taxonomy", TaxonomyMapper(config))])
    path = save_bundle(mapped, tmp_path / "mapped.taskclf")
    assert read_bundle_info(path).metadata.steps[-1] == "taxonomy"
    pd.testing.assert_frame_equal(
        load_bundle(path).transform(features_v1), mapped.transform(features_v1)
    )


def test_recorded_training_fingerprint_is_saved(booster_v1, encoders_v1, frame_v1, tmp_path):
    from taskclf.bundle import record_training
    from taskclf.bundle_dir import export_bundle_dir, read_bundle_dir_info

    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    pipe = record_training(build_pipeline(booster_v1, encoders_v1), X, y)
    expected = training_fingerprint(X, y)
    path = save_bundle(pipe, tmp_path / "m.taskclf")
    assert read_bundle_info(path).metadata.training_fingerprint == expected
    assert load_bundle(path).named_steps["predict"].training_fingerprint_ == expected
    directory = export_bundle_dir(pipe, tmp_path / "m")
    assert read_bundle_dir_info(directory).metadata.training_fingerprint == expected


def test_pipeline_fitted_by_taskclf(frame_v1, tmp_path):
    from taskclf.bundle import record_training
    from taskclf.exceptions import NotFittedError

    X, y = frame_v1.drop(columns="label"), frame_v1["label"]
    unfitted = build_pipeline(num_boost_round=5, num_threads=1)
    with pytest.raises(NotFittedError, match="not fitted"):
        save_bundle(unfitted, tmp_path / "unfitted.taskclf")
    assert not (tmp_path / "unfitted.taskclf").exists()
    fitted = record_training(unfitted.fit(X, y), X, y)
    path = save_bundle(fitted, tmp_path / "fitted.taskclf")
    meta = read_bundle_info(path).metadata
    assert meta.training_fingerprint == training_fingerprint(X, y)
    assert set(meta.training_metrics) == {
        "oof_brier_before",
        "oof_brier_after",
        "oof_log_loss_before",
        "oof_log_loss_after",
    }
    assert meta.params["predict__num_boost_round"] == 5
    assert meta.params["calibrate__method"] == "temperature"
    loaded = load_bundle(path)
    pd.testing.assert_frame_equal(loaded.transform(X), fitted.transform(X))


# Bad input (contract: a specific error naming the problem)

# --------------------------------------------------------------------------
# Bundle files (save_bundle / load_bundle): damaged anywhere, a clear refusal
# --------------------------------------------------------------------------


def _regions(data: bytes) -> dict[str, int]:
    """Offsets of the parts of a bundle file: magic, version, header length,
    the JSON header (and its metadata), the header digest, the payload."""
    header_start = _PREFIX.size
    header_length = _PREFIX.unpack_from(data)[2]
    digest_start = header_start + header_length
    payload_start = digest_start + 32
    return {
        "magic": 3,
        "format version": len(MAGIC) + 1,
        "header length": len(MAGIC) + 4,
        "header start": header_start,
        "metadata (schema hash)": data.index(b"4077fe0dba70"),
        "header end": digest_start - 1,
        "header digest": digest_start + 7,
        "payload start": payload_start,
        "payload middle": (payload_start + len(data)) // 2,
        "payload end": len(data) - 1,
    }


def _flipped(data: bytes, region: str) -> bytes:
    damaged = bytearray(data)
    damaged[_regions(data)[region]] ^= 0x5A
    return bytes(damaged)


def _truncated(data: bytes, where: str) -> bytes:
    regions = _regions(data)
    keep = {
        "to nothing": 0,
        "inside the magic": 6,
        "after the prefix": _PREFIX.size,
        "inside the header": regions["header start"] + 40,
        "before the payload": regions["payload start"],
        "inside the payload": regions["payload middle"],
        "by one byte": len(data) - 1,
    }[where]
    return data[:keep]


def _other_schema(data: bytes) -> bytes:
    """A well-formed bundle (digests recomputed) whose metadata names another schema."""
    header, payload = decode_bundle(data, "bundle")
    header["metadata"]["schema_version"] = "v2"
    header["metadata"]["schema_hash"] = "a15f4751a947"
    return encode_bundle(header, payload)


def _unknown_schema(data: bytes) -> bytes:
    header, payload = decode_bundle(data, "bundle")
    header["metadata"]["schema_hash"] = "0123456789ab"
    return encode_bundle(header, payload)


def _raw_bundle(header_text: bytes, payload: bytes) -> bytes:
    """A bundle file around a header text of our own (its digest recomputed)."""
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_text)),
            header_text,
            hashlib.sha256(header_text).digest(),
            payload,
        )
    )


def _huge_number_in_header(data: bytes) -> bytes:
    header, payload = decode_bundle(data, "bundle")
    text = json.dumps(header).replace('"metadata"', '"x": 1' + "0" * 5000 + ', "metadata"', 1)
    return _raw_bundle(text.encode(), payload)


def _nesting_bomb_header(data: bytes) -> bytes:
    _, payload = decode_bundle(data, "bundle")
    return _raw_bundle(b"[" * 200_000 + b"]" * 200_000, payload)


_REGION_NAMES = (
    "magic",
    "format version",
    "header length",
    "header start",
    "metadata (schema hash)",
    "header end",
    "header digest",
    "payload start",
    "payload middle",
    "payload end",
)
BUNDLE_DAMAGE = {
    **{
        f"a flipped byte: {region}": (lambda d, r=region: _flipped(d, r), ())
        for region in _REGION_NAMES
    },
    **{
        f"truncated {where}": (lambda d, w=where: _truncated(d, w), ())
        for where in (
            "to nothing",
            "inside the magic",
            "after the prefix",
            "inside the header",
            "before the payload",
            "inside the payload",
            "by one byte",
        )
    },
    "bytes appended": (lambda d: d + b"\x00extra", ()),
    "a CSV file": (
        lambda d: b"user_id,bucket_start_ts\nu1,2025-01-06T09:00:00\n",
        ("not a taskclf",),
    ),
    "binary garbage": (lambda d: bytes(range(256)) * 64, ("not a taskclf",)),
    "a plain joblib pickle": (lambda d: _joblib_bytes(), ("not a taskclf",)),
    "a 5000-digit number in the header": (_huge_number_in_header, ("not JSON",)),
    "a nesting bomb as the header": (_nesting_bomb_header, ("not JSON",)),
}
SCHEMA_DAMAGE = {
    "another schema's metadata": (_other_schema, ("v2",)),
    "an unknown schema hash": (_unknown_schema, ("0123456789ab",)),
}
"""Well-formed files whose metadata this taskclf refuses to load (read_bundle_info
reads them: it reports what a file says)."""


def _joblib_bytes() -> bytes:
    buffer = io.BytesIO()
    joblib.dump({"not": "a bundle"}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entry", "damage", "words"),
    [
        pytest.param(entry, damage, words, id=f"{name} @ {entry}")
        for entries, cases in (
            (("load_bundle", "read_bundle_info"), BUNDLE_DAMAGE),
            (("load_bundle",), SCHEMA_DAMAGE),
        )
        for name, (damage, words) in cases.items()
        for entry in entries
    ],
)
def test_damaged_bundle_file_is_refused_naming_it(entry, damage, words, bundle_file, tmp_path):
    path = tmp_path / "damaged model.taskclf"
    path.write_bytes(damage(bundle_file.read_bytes()))
    loader = load_bundle if entry == "load_bundle" else read_bundle_info
    refused(lambda: loader(path), BundleError, str(path), *words)


class _Trap:
    """Unpickling this object creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_is_never_unpickled_unverified(tmp_path):
    marker = tmp_path / "unpickled"
    for name, data in {
        "trap.taskclf": pickle.dumps(_Trap(marker)),
        "trap.joblib": _dump_joblib(_Trap(marker)),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        refused(lambda p=path: load_bundle(p), BundleError, str(path), "not a taskclf bundle")
    assert not marker.exists()


def _dump_joblib(value) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer)
    return buffer.getvalue()


def test_a_pickle_inside_a_forged_bundle_is_refused_by_its_digest(bundle_file, tmp_path):
    # same header, payload swapped for a trap: the recorded payload digest differs
    marker = tmp_path / "unpickled"
    header, _ = decode_bundle(bundle_file.read_bytes(), "bundle")
    trap = _dump_joblib(_Trap(marker))
    data = bundle_file.read_bytes()
    forged = data[: _regions(data)["payload start"]] + trap
    path = tmp_path / "forged.taskclf"
    path.write_bytes(forged)
    refused(lambda: load_bundle(path), BundleError, str(path))
    assert not marker.exists()
    assert header["payload"]["sha256"] != hashlib.sha256(trap).hexdigest()


def test_bundle_refusals_for_a_missing_file_and_a_directory(tmp_path):
    refused(lambda: load_bundle(tmp_path / "absent.taskclf"), BundleError, "absent.taskclf")
    refused(lambda: load_bundle(tmp_path), BundleError, str(tmp_path), "directory")


def test_pinned_digest_mismatch_is_refused(bundle_file):
    refused(
        lambda: load_bundle(bundle_file, sha256="0" * 64),
        BundleError,
        str(bundle_file),
        "SHA-256",
    )


def test_a_v2_bundle_refuses_a_frame_of_schema_v1(frame, tmp_path):
    v2 = make_frame(n_users=2, minutes=60, schema_version="v2", seed=8)
    booster, encoders = train_booster(v2, schema_version="v2", rounds=3)
    path = tmp_path / "v2.taskclf"
    save_bundle(build_pipeline(booster, encoders), path)
    pipeline = load_bundle(path)
    assert pipeline.predict(v2.drop(columns="label")).shape == (len(v2),)
    refused(
        lambda: pipeline.predict(frame.assign(schema_version="v1")),
        SchemaMismatchError,
        "'v1'",
        "v2",
    )
