import doctest

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskclf.synth
from taskclf.core.schema import SCHEMA_V1, SKETCH_COLUMNS, get_schema
from taskclf.core.types import CLASS_INDEX, CLASS_ORDER
from taskclf.exceptions import InvalidParameterError, SchemaMismatchError
from taskclf.synth import NON_BROWSER_DOMAIN, SOURCE_IDS, make_activity_frame

MINUTE = pd.Timedelta(seconds=60)
IDLE_GAP = pd.Timedelta(seconds=300)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_activity_frame(n_users=6, n_days=3, random_state=7)


@pytest.fixture(scope="module")
def clean_frame() -> pd.DataFrame:
    return make_activity_frame(
        n_users=3, n_days=2, missing_rate=0.0, unseen_app_rate=0.0, random_state=3
    )


def expected_columns(version: str) -> list[str]:
    names = [name for name, _ in get_schema(version).registry]
    if "user_id" not in names:
        names = ["user_id", *names]
    return [*names, "label"]


def check_dtype(series: pd.Series, type_name: str) -> None:
    dtype = series.dtype
    name = series.name
    if type_name == "str":
        assert dtype is np.dtype(object) or isinstance(dtype, pd.StringDtype), (name, dtype)
        assert not isinstance(dtype, pd.CategoricalDtype), name
        assert all(isinstance(v, str) for v in pd.unique(series.astype(object))), name
    elif type_name == "int":
        assert dtype == np.int64, (name, dtype)
    elif type_name == "float":
        assert dtype == np.float64, (name, dtype)
    elif type_name == "bool":
        assert dtype == np.bool_, (name, dtype)
    elif type_name == "datetime":
        assert dtype == "datetime64[ns, UTC]", (name, dtype)
    elif type_name == "list":
        assert dtype is np.dtype(object), (name, dtype)
        assert all(isinstance(v, tuple | list) for v in series.iloc[:100]), name
    else:  # pragma: no cover - a registry type this test does not know
        raise AssertionError(f"unknown registry type {type_name!r}")


def check_valid(df: pd.DataFrame, version: str) -> None:
    """Invariants every frame keeps, whatever the arguments."""
    assert list(df.columns) == expected_columns(version)
    schema = get_schema(version)
    for column, type_name in (("user_id", "str"), *schema.registry, ("label", "str")):
        check_dtype(df[column], type_name)
    if len(df) == 0:
        return
    keys = df[["user_id", "bucket_start_ts"]]
    assert not keys.duplicated().any()
    order = keys.sort_values(["user_id", "bucket_start_ts"], kind="stable").index
    assert (order == df.index).all()
    assert (df["bucket_end_ts"] - df["bucket_start_ts"] == MINUTE).all()
    assert set(df["schema_version"]) == {version}
    assert set(df["schema_hash"]) == {schema.schema_hash}
    assert set(df["label"]) <= set(CLASS_ORDER)
    ts = df["bucket_start_ts"]
    assert (df["hour_of_day"] == ts.dt.hour).all()
    assert (df["day_of_week"] == ts.dt.day_of_week).all()
    assert (ts.dt.day_of_week < 5).all()
    # A session is a gapless piece of one user's timeline.
    same_session = df["session_id"].to_numpy()[1:] == df["session_id"].to_numpy()[:-1]
    same_user = df["user_id"].to_numpy()[1:] == df["user_id"].to_numpy()[:-1]
    step = np.diff(ts.to_numpy())
    assert (step[same_session] <= IDLE_GAP.to_timedelta64()).all()
    assert (step[same_user & ~same_session] > IDLE_GAP.to_timedelta64()).all()
    assert not (same_session & ~same_user).any()
    length = df["session_length_so_far"].to_numpy()
    assert (np.diff(length)[same_session] > 0).all()
    assert (length[np.r_[True, ~same_session]] == 0).all()


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_columns_and_dtypes_follow_the_registry(version):
    df = make_activity_frame(n_users=2, n_days=2, schema_version=version, random_state=1)
    check_valid(df, version)
    assert len(df) > 500
    assert df["source_ids"].iloc[0] == SOURCE_IDS


def test_v2_keeps_user_id_and_holds_exactly_the_v1_columns():
    v1 = make_activity_frame(n_users=2, n_days=1, schema_version="v1")
    v2 = make_activity_frame(n_users=2, n_days=1, schema_version="v2")
    assert "user_id" not in dict(get_schema("v2").registry)
    assert list(v2.columns) == list(v1.columns)
    assert v2["user_id"].nunique() == 2


def test_v3_title_columns():
    df = make_activity_frame(n_users=2, n_days=1, schema_version="v3", random_state=2)
    sketch = df[list(SKETCH_COLUMNS)].to_numpy()
    rows_missing = np.isnan(sketch).all(axis=1)
    assert 0 < rows_missing.mean() < 0.05
    assert np.isfinite(sketch[~rows_missing]).all()
    assert sketch[~rows_missing].std() > 0.05
    assert (df["title_char_count"] >= df["title_token_count"]).all()
    assert (df["title_token_count"] >= 1).all()
    assert (df["title_separator_count"] >= 0).all()
    ratio = df["title_unique_token_ratio"].dropna()
    assert ratio.between(0, 1).all()
    # Sketches are functions of the window title.
    per_title = df.groupby("window_title_hash")[list(SKETCH_COLUMNS[:4])].nunique()
    assert (per_title <= 2).all().all()  # one value, or NaN rows plus one value


def test_seeded_runs_are_identical_and_seeds_matter():
    a = make_activity_frame(n_users=3, n_days=2, random_state=11)
    b = make_activity_frame(n_users=3, n_days=2, random_state=11)
    c = make_activity_frame(n_users=3, n_days=2, random_state=12)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) != len(c) or not a["label"].equals(c["label"])
    assert not a["keys_per_min"].head(200).equals(c["keys_per_min"].head(200))


def test_invariants_of_a_moderate_frame(frame):
    check_valid(frame, "v1")
    assert frame["user_id"].nunique() == 6


def test_every_label_appears(frame):
    assert set(frame["label"]) == set(CLASS_ORDER)
    shares = frame["label"].value_counts(normalize=True)
    assert shares.min() > 0.01


def test_labels_come_in_long_segments(frame):
    ts = frame["bucket_start_ts"].to_numpy()
    user = frame["user_id"].to_numpy()
    label = frame["label"].to_numpy()
    brk = np.r_[
        True, (user[1:] != user[:-1]) | (np.diff(ts) > IDLE_GAP) | (label[1:] != label[:-1])
    ]
    runs = np.diff(np.r_[np.flatnonzero(brk), len(frame)])
    assert np.median(runs) >= 5
    assert runs.max() >= 45  # some work goes on for most of an hour or more
    meet_runs = runs[label[brk] == "Meet"]
    assert np.median(meet_runs) >= 15


def test_working_days_have_lunch_and_no_night_rows():
    # Seven calendar days from a Monday hold five working days.
    df = make_activity_frame(n_users=3, n_days=5, start="2025-03-03", random_state=5)
    ts = df["bucket_start_ts"]
    assert ts.dt.date.nunique() == 5
    assert ts.dt.hour.between(6, 21).all()
    day = ts.dt.floor("D")
    for _, one_day in df.groupby([df["user_id"], day], sort=False):
        steps = one_day["bucket_start_ts"].diff().dropna()
        gap_minutes = steps[steps > IDLE_GAP].dt.total_seconds() / 60
        assert gap_minutes.max() >= 25  # lunch (or a long break), with no rows
        assert len(one_day) > 5 * 60  # yet most of the day is worked
    assert (df["label"] == "BreakIdle").any()  # breaks at the computer too


def test_weekends_are_skipped_and_start_is_honoured():
    df = make_activity_frame(n_users=1, n_days=3, start="2025-03-07", random_state=0)
    dates = sorted({str(d) for d in df["bucket_start_ts"].dt.date})
    assert dates == ["2025-03-07", "2025-03-10", "2025-03-11"]


def test_minutes_per_day_bounds_each_day():
    df = make_activity_frame(n_users=2, n_days=3, minutes_per_day=90, random_state=0)
    ts = df["bucket_start_ts"]
    span = ts.groupby([df["user_id"], ts.dt.floor("D")]).agg(lambda s: s.max() - s.min())
    assert (span < pd.Timedelta(minutes=90)).all()
    assert (span > pd.Timedelta(minutes=30)).all()


def test_unseen_apps():
    known = make_activity_frame(n_users=4, n_days=2, unseen_app_rate=0.0, random_state=0)
    assert not known["app_id"].str.startswith(taskclf.synth.UNSEEN_APP_PREFIX).any()
    vocabulary = set(known["app_id"])
    assert len(vocabulary) <= 25

    df = make_activity_frame(n_users=4, n_days=2, unseen_app_rate=0.05, random_state=1)
    unseen = ~df["app_id"].isin(vocabulary)
    assert 0.03 < unseen.mean() < 0.07
    assert df.loc[unseen, "app_id"].value_counts().max() <= 5  # rare names
    flags = df.loc[unseen, ["is_browser", "is_editor", "is_terminal"]]
    assert not flags.to_numpy().any()
    assert (df.loc[unseen, "domain_category"] == NON_BROWSER_DOMAIN).all()


def test_app_attributes_follow_the_app(frame):
    per_app = frame.groupby("app_id")[
        ["app_category", "is_browser", "is_editor", "is_terminal"]
    ].nunique()
    assert (per_app == 1).all().all()
    browser = frame["is_browser"].to_numpy()
    non_browser = (frame["domain_category"] == NON_BROWSER_DOMAIN).to_numpy()
    assert (browser == ~non_browser).all()
    assert (frame["is_editor"] & frame["is_terminal"]).sum() == 0
    # Each label has its own favourite apps.
    top = frame.groupby("label")["app_category"].agg(lambda s: s.value_counts().index[0])
    assert top["Meet"] == "meeting"
    assert top["Communicate"] in {"chat", "email"}
    assert top["ReadResearch"] == "browser"


def test_missing_values_only_in_float_columns(frame, clean_frame):
    assert not clean_frame.isna().any().any()
    floats = [c for c, t in SCHEMA_V1.registry if t == "float"]
    others = [c for c, t in SCHEMA_V1.registry if t != "float"]
    assert not frame[others].isna().any().any()
    shares = frame[floats].isna().mean()
    assert shares["session_length_so_far"] == 0
    shares = shares.drop("session_length_so_far")
    assert (shares > 0.003).all() and (shares < 0.02).all()


def test_missing_rate_one_blanks_every_float_feature():
    df = make_activity_frame(n_users=1, n_days=1, missing_rate=1.0)
    assert df["keys_per_min"].isna().all()
    assert df["session_length_so_far"].notna().all()


def test_rolling_and_delta_features_follow_the_per_minute_values(clean_frame):
    df = clean_frame
    by_session = df.groupby("session_id", sort=False)
    for column, source, window in [
        ("keys_per_min_rolling_5", "keys_per_min", 5),
        ("keys_per_min_rolling_15", "keys_per_min", 15),
        ("mouse_distance_rolling_5", "mouse_distance", 5),
        ("mouse_distance_rolling_15", "mouse_distance", 15),
    ]:
        expected = by_session[source].transform(
            lambda s, w=window: s.rolling(w, min_periods=1).mean()
        )
        np.testing.assert_allclose(df[column], expected, rtol=1e-9, atol=1e-6)
    for column, source in [
        ("keys_per_min_delta", "keys_per_min"),
        ("clicks_per_min_delta", "clicks_per_min"),
        ("mouse_distance_delta", "mouse_distance"),
    ]:
        expected = by_session[source].diff().fillna(0.0)
        np.testing.assert_allclose(df[column], expected)
    switches = by_session["app_change_count"]
    for column, window in [
        ("app_switch_count_last_5m", 5),
        ("app_switch_count_last_15m", 15),
    ]:
        expected = switches.transform(lambda s, w=window: s.rolling(w, min_periods=1).sum())
        assert (df[column] == expected.astype(np.int64)).all()
    repeat = df.groupby(["session_id", "window_title_hash"], sort=False).cumcount() + 1
    assert (df["title_repeat_count_session"] == repeat).all()
    assert df["idle_return_indicator"][~df["session_id"].duplicated()].all()


def test_activity_features_stay_in_range(clean_frame):
    df = clean_frame
    for column in ["active_seconds_keyboard", "active_seconds_mouse", "active_seconds_any"]:
        assert df[column].between(0, 60).all(), column
    assert (df["active_seconds_any"] >= df["active_seconds_keyboard"] - 1e-9).all()
    assert df["max_idle_run_seconds"].between(0, 60).all()
    for column in ["backspace_ratio", "shortcut_rate", "app_foreground_time_ratio"]:
        assert df[column].between(0, 1).all(), column
    for column in ["keys_per_min", "clicks_per_min", "mouse_distance", "event_density"]:
        assert (df[column] >= 0).all(), column
    means = df.groupby("label")["keys_per_min"].mean()
    assert means["Write"] > means["ReadResearch"] > means["BreakIdle"]


def test_a_model_learns_much_but_not_everything():
    df = make_activity_frame(n_users=8, n_days=2, random_state=21)
    schema = get_schema("v1")
    features = df[list(schema.feature_columns)].copy()
    for column in schema.categorical_columns:
        features[column] = pd.factorize(features[column])[0]
    y = df["label"].map(CLASS_INDEX).to_numpy()
    users = sorted(df["user_id"].unique())
    train = df["user_id"].isin(users[:5]).to_numpy()
    params = {
        "objective": "multiclass",
        "num_class": len(CLASS_ORDER),
        "num_leaves": 15,
        "learning_rate": 0.1,
        "num_threads": 1,
        "max_bin": 63,
        "verbose": -1,
        "seed": 0,
    }
    booster = lgb.train(params, lgb.Dataset(features[train], y[train]), num_boost_round=30)
    predicted = booster.predict(features[~train]).argmax(axis=1)
    accuracy = float((predicted == y[~train]).mean())
    majority = float(pd.Series(y[~train]).value_counts(normalize=True).max())
    assert 0.4 < accuracy < 0.98
    assert accuracy > majority + 0.15


def test_empty_frames_keep_the_layout():
    for kwargs in ({"n_users": 0}, {"n_days": 0}):
        df = make_activity_frame(**kwargs, schema_version="v3")
        assert len(df) == 0
        check_valid(df, "v3")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_users": -1},
        {"n_days": 2.5},
        {"missing_rate": 1.5},
        {"unseen_app_rate": -0.1},
        {"noise": -1.0},
        {"noise": float("nan")},
        {"minutes_per_day": 5},
        {"minutes_per_day": 2000},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InvalidParameterError):
        make_activity_frame(**kwargs)


def test_unknown_schema_is_refused():
    with pytest.raises(SchemaMismatchError, match="v9"):
        make_activity_frame(schema_version="v9")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n_users=st.integers(0, 3),
    n_days=st.integers(0, 3),
    minutes_per_day=st.none() | st.integers(10, 840),
    version=st.sampled_from(["v1", "v2"]),
    seed=st.integers(0, 2**32 - 1),
    start=st.dates(
        min_value=pd.Timestamp("2000-01-01").date(),
        max_value=pd.Timestamp("2200-01-01").date(),
    ).map(str),
)
def test_any_small_frame_is_valid(n_users, n_days, minutes_per_day, version, seed, start):
    df = make_activity_frame(
        n_users,
        n_days,
        schema_version=version,
        start=start,
        minutes_per_day=minutes_per_day,
        random_state=seed,
    )
    check_valid(df, version)
    # A user may spend all of a very short day away from the computer.
    if n_days and (minutes_per_day is None or minutes_per_day >= 120):
        assert df["user_id"].nunique() == n_users
    else:
        assert df["user_id"].nunique() <= n_users
    if minutes_per_day is not None and len(df):
        per_day = df.groupby([df["user_id"], df["bucket_start_ts"].dt.floor("D")]).size()
        assert (per_day <= minutes_per_day).all()


def test_docstring_examples_run():
    result = doctest.testmod(taskclf.synth, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
