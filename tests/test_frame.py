"""DataFrame helpers every stage shares (taskclf._frame)."""

from __future__ import annotations

import pandas as pd
import pytest

from taskclf import build_pipeline
from taskclf.exceptions import ColumnTypeError


def test_a_column_named_twice_is_refused_naming_it(features_v1, booster_v1, encoders_v1):
    twice = pd.concat([features_v1, features_v1[["keys_per_min"]]], axis=1)
    with pytest.raises(ColumnTypeError, match="named twice: \\['keys_per_min'\\]"):
        build_pipeline(booster_v1, encoders_v1).predict(twice)
