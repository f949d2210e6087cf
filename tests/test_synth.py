import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskclf.core.schema import SCHEMA_V1, SKETCH_COLUMNS, get_schema
from taskclf.core.types import CLASS_INDEX, CLASS_ORDER
from taskclf.exceptions import InvalidParameterError, SchemaMismatchError
from taskclf.synth import NON_BROWSER_DOMAIN, SOURCE_IDS, UNSEEN_APP_PREFIX, make_activity_frame

IDLE_GAP = np.timedelta64(300, "s")
DTYPES = {"int": "int64", "float": "float64", "bool": "bool", "datetime": "datetime64[ns, UTC]"}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_activity_frame(n_users=6, n_days=3, random_state=7)


@pytest.fixture(scope="module")
def clean_frame() -> pd.DataFrame:
    return make_activity_frame(3, 2, missing_rate=0.0, unseen_app_rate=0.0, random_state=3)


def check_valid(df: pd.DataFrame, version: str) -> None:
    """Invariants every frame keeps, whatever the arguments."""
    schema = get_schema(version)
    registry = [("user_id", "str"), *(c for c in schema.registry if c[0] != "user_id")]
    assert list(df.columns) == [name for name, _ in registry] + ["label"]
    for name, kind in [*registry, ("label", "str")]:
        assert str(df[name].dtype) == DTYPES.get(kind, "object"), name
    if len(df) == 0:
        return
    assert isinstance(df["user_id"].iloc[0], str) and df["source_ids"].iloc[0] == SOURCE_IDS
    assert (df["schema_version"] == version).all() and set(df["label"]) <= set(CLASS_ORDER)
    assert (df["schema_hash"] == schema.schema_hash).all()
    order = df.sort_values(["user_id", "bucket_start_ts"], kind="stable").index
    assert (order == df.index).all()
    assert not df.duplicated(["user_id", "bucket_start_ts"]).any()
    ts = df["bucket_start_ts"]
    assert (df["bucket_end_ts"] - ts == pd.Timedelta(minutes=1)).all()
    assert (df["hour_of_day"] == ts.dt.hour).all()
    assert (df["day_of_week"] == ts.dt.day_of_week).all() and (ts.dt.day_of_week < 5).all()
    # A session is a piece of one user's timeline without a gap over the idle gap.
    same_session = df["session_id"].to_numpy()[1:] == df["session_id"].to_numpy()[:-1]
    same_user = df["user_id"].to_numpy()[1:] == df["user_id"].to_numpy()[:-1]
    step = np.diff(ts.to_numpy())
    assert (step[same_session] <= IDLE_GAP).all()
    assert (step[same_user & ~same_session] > IDLE_GAP).all()
    assert not (same_session & ~same_user).any()
    length = df["session_length_so_far"].to_numpy()
    assert (length[np.r_[True, ~same_session]] == 0).all()
    assert (np.diff(length)[same_session] > 0).all()


@pytest.mark.parametrize(
    ("version", "n_users", "n_days"),
    [("v1", 2, 2), ("v2", 2, 1), ("v3", 2, 1), ("v3", 0, 2), ("v1", 2, 0)],
)
def test_columns_and_dtypes_follow_the_registry_and_the_seed(version, n_users, n_days):
    df, again, other = (
        make_activity_frame(n_users, n_days, schema_version=version, random_state=seed)
        for seed in (1, 1, 2)
    )
    check_valid(df, version)
    pd.testing.assert_frame_equal(df, again)
    assert df.head(50).equals(other.head(50)) == (len(df) == 0)
    assert df["user_id"].nunique() == (n_users if n_days else 0)
    assert (len(df) > 250) == bool(n_users * n_days)


@settings(max_examples=10)
@given(
    n_users=st.integers(0, 2),
    n_days=st.integers(0, 2),
    minutes_per_day=st.none() | st.integers(10, 840),
    version=st.sampled_from(["v1", "v2", "v3"]),
    seed=st.integers(0, 2**32 - 1),
    start=st.dates(pd.Timestamp("2000-01-01").date(), pd.Timestamp("2200-01-01").date()),
)
def test_any_small_frame_is_valid(n_users, n_days, minutes_per_day, version, seed, start):
    kwargs = {"schema_version": version, "start": str(start), "minutes_per_day": minutes_per_day}
    df = make_activity_frame(n_users, n_days, random_state=seed, **kwargs)
    check_valid(df, version)
    # A user may spend all of a very short day away from the computer.
    if n_days and (minutes_per_day is None or minutes_per_day >= 120):
        assert df["user_id"].nunique() == n_users
    if len(df):
        assert df["bucket_start_ts"].min().date() >= start
        if minutes_per_day is not None:
            per_day = df.groupby([df["user_id"], df["bucket_start_ts"].dt.floor("D")]).size()
            assert (per_day <= minutes_per_day).all()


def test_v3_title_columns_are_functions_of_the_title():
    df = make_activity_frame(n_users=2, n_days=1, schema_version="v3", random_state=2)
    sketch = df[list(SKETCH_COLUMNS)].to_numpy()
    blank = np.isnan(sketch).all(axis=1)
    assert 0 < blank.mean() < 0.05 and np.isfinite(sketch[~blank]).all()
    assert sketch[~blank].std() > 0.05
    assert (df["title_char_count"] >= df["title_token_count"]).all()
    assert (df["title_token_count"] >= 1).all() and (df["title_separator_count"] >= 0).all()
    assert df["title_unique_token_ratio"].dropna().between(0, 1).all()
    per_title = df.groupby("window_title_hash")[[*SKETCH_COLUMNS[:4], "title_char_count"]]
    assert (per_title.nunique() == 1).all().all()  # NaN rows aside


def test_labels_come_in_plausible_segments(frame):
    shares = frame["label"].value_counts(normalize=True)
    assert set(shares.index) == set(CLASS_ORDER)
    assert shares.min() > 0.01 and shares.max() < 0.5
    # Segments of tens of minutes; meetings last quarter hours.
    ts, user, label = (frame[c].to_numpy() for c in ("bucket_start_ts", "user_id", "label"))
    brk = np.r_[
        True, (user[1:] != user[:-1]) | (np.diff(ts) > IDLE_GAP) | (label[1:] != label[:-1])
    ]
    runs = np.diff(np.r_[np.flatnonzero(brk), len(frame)])
    assert np.median(runs) >= 5 and runs.max() >= 45
    assert np.median(runs[label[brk] == "Meet"]) >= 15


def test_working_days_have_lunch_weekends_and_bounds():
    df = make_activity_frame(n_users=2, n_days=3, start="2025-03-06", random_state=5)
    ts = df["bucket_start_ts"]
    assert sorted({str(d) for d in ts.dt.date}) == ["2025-03-06", "2025-03-07", "2025-03-10"]
    assert ts.dt.hour.between(6, 21).all()
    for _, day in df.groupby([df["user_id"], ts.dt.floor("D")]):
        assert day["bucket_start_ts"].diff().max() >= pd.Timedelta(minutes=25)  # lunch
        assert len(day) > 5 * 60
    short = make_activity_frame(2, 3, minutes_per_day=90, random_state=0)
    ts = short["bucket_start_ts"]
    span = ts.groupby([short["user_id"], ts.dt.floor("D")]).agg(lambda s: s.max() - s.min())
    assert span.between(pd.Timedelta(minutes=30), pd.Timedelta(minutes=89)).all()


def test_apps_fix_their_attributes_and_unseen_apps_are_rare(frame, clean_frame):
    assert not clean_frame["app_id"].str.startswith(UNSEEN_APP_PREFIX).any()
    assert clean_frame["app_id"].nunique() <= 25
    per_app = frame.groupby("app_id")[["app_category", "is_browser", "is_editor", "is_terminal"]]
    assert (per_app.nunique() == 1).all().all()
    browser = frame["is_browser"].to_numpy()
    assert (browser == (frame["domain_category"] != NON_BROWSER_DOMAIN).to_numpy()).all()
    assert not (frame["is_editor"] & frame["is_terminal"]).any()
    top = frame.groupby("label")["app_category"].agg(lambda s: s.value_counts().index[0])
    assert top["Meet"] == "meeting" and top["ReadResearch"] == "browser"
    assert top["Communicate"] in {"chat", "email"}
    df = make_activity_frame(4, 1, unseen_app_rate=0.05, random_state=1)
    unseen = df["app_id"].str.startswith(UNSEEN_APP_PREFIX)
    assert 0.03 < unseen.mean() < 0.07
    assert df.loc[unseen, "app_id"].value_counts().max() <= 5
    assert not df.loc[unseen, ["is_browser", "is_editor", "is_terminal"]].to_numpy().any()


def test_features_follow_the_rows_stay_in_range_and_only_floats_go_missing(frame, clean_frame):
    assert not clean_frame.isna().any().any()
    floats = [c for c, kind in SCHEMA_V1.registry if kind == "float"]
    assert not frame.drop(columns=floats).isna().any().any()
    shares = frame[floats].isna().mean()
    assert shares.pop("session_length_so_far") == 0
    assert shares.between(0.003, 0.02).all()
    everything = make_activity_frame(1, 1, missing_rate=1.0)
    assert everything[floats].drop(columns="session_length_so_far").isna().all().all()
    df = clean_frame
    by_session = df.groupby("session_id", sort=False)
    for source in ("keys_per_min", "mouse_distance"):
        for window in (5, 15):
            expected = by_session[source].transform(lambda s, w=window: s.rolling(w, 1).mean())
            np.testing.assert_allclose(df[f"{source}_rolling_{window}"], expected, atol=1e-6)
    for source in ("keys_per_min", "clicks_per_min", "mouse_distance"):
        np.testing.assert_allclose(df[f"{source}_delta"], by_session[source].diff().fillna(0.0))
    for window in (5, 15):
        expected = by_session["app_change_count"].transform(
            lambda s, w=window: s.rolling(w, 1).sum()
        )
        assert (df[f"app_switch_count_last_{window}m"] == expected).all()
    repeat = df.groupby(["session_id", "window_title_hash"], sort=False).cumcount() + 1
    assert (df["title_repeat_count_session"] == repeat).all()
    assert df["idle_return_indicator"][~df["session_id"].duplicated()].all()
    seconds = ["active_seconds_keyboard", "active_seconds_mouse", "active_seconds_any"]
    assert df[[*seconds, "max_idle_run_seconds"]].stack().between(0, 60).all()
    assert (df["active_seconds_any"] >= df["active_seconds_keyboard"] - 1e-9).all()
    ratios = ["backspace_ratio", "shortcut_rate", "app_foreground_time_ratio"]
    assert df[ratios].stack().between(0, 1).all()
    counts = ["keys_per_min", "clicks_per_min", "mouse_distance", "event_density"]
    assert (df[counts] >= 0).all().all()
    means = df.groupby("label")["keys_per_min"].mean()
    assert means["Write"] > means["ReadResearch"] > means["BreakIdle"]


def test_a_model_learns_much_but_not_everything(frame):
    schema = get_schema("v1")
    features = frame[list(schema.feature_columns)].copy()
    for column in schema.categorical_columns:
        features[column] = pd.factorize(features[column])[0]
    y = frame["label"].map(CLASS_INDEX).to_numpy()
    train = frame["user_id"].isin(sorted(frame["user_id"].unique())[:4]).to_numpy()
    params = {"objective": "multiclass", "num_class": len(CLASS_ORDER), "num_leaves": 15}
    params |= {"max_bin": 63, "num_threads": 1, "verbose": -1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(features[train], y[train]), num_boost_round=20)
    accuracy = float((booster.predict(features[~train]).argmax(axis=1) == y[~train]).mean())
    majority = float(pd.Series(y[~train]).value_counts(normalize=True).max())
    assert majority + 0.15 < accuracy < 0.9


@pytest.mark.parametrize(
    "kwargs",
    [{"n_users": -1}, {"n_days": 2.5}, {"n_users": True}, {"missing_rate": 1.5},
     {"unseen_app_rate": -0.1}, {"noise": -1.0}, {"noise": float("nan")},
     {"minutes_per_day": 5}, {"minutes_per_day": 2000}, {"start": "not a date"},
     {"start": "NaT"}],
)  # fmt: skip
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InvalidParameterError, match=next(iter(kwargs))):
        make_activity_frame(**kwargs)
    with pytest.raises(SchemaMismatchError, match="v9"):
        make_activity_frame(schema_version="v9")
