"""The AttentiveNAS accuracy predictor as plain arrays: the converter, the arrays against scikit-learn on the
original file, and the surrogate evaluator (noise, determinism, no pickle at run time)."""
from __future__ import annotations

import hashlib
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alphanet_zoo.config import SEARCH_SPACE
from alphanet_zoo.registry import list_models, model_info
from alphanet_zoo.search.surrogate import SOURCE_SHA256, AccuracySurrogate, SurrogateEvaluator, features

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / "tests" / "data" / "acc_predictor.joblib"
sys.path.insert(0, str(ROOT / "tools"))
import convert_acc_predictor  # noqa: E402


def _subnets(n: int, seed: int = 0):
    rng = random.Random(seed)
    return [SEARCH_SPACE.sample(rng) for _ in range(n)]


def test_the_test_copy_is_the_authors_file():
    assert hashlib.sha256(ORIGINAL.read_bytes()).hexdigest() == SOURCE_SHA256


def test_arrays_predict_what_scikit_learn_predicts_from_the_original_file():
    pytest.importorskip("sklearn")
    from joblib.numpy_pickle import NumpyUnpickler
    from sklearn.tree._tree import NODE_DTYPE, Tree

    class NodeDtypeUnpickler(NumpyUnpickler):
        """joblib's own loader; the trees' node records (written by scikit-learn 0.23.2) are given the
        field today's scikit-learn expects (missing_go_to_left, unused without missing values)."""

        dispatch = dict(NumpyUnpickler.dispatch)

        def load_build(self):
            state, obj = self.stack[-1], self.stack[-2]
            if isinstance(obj, Tree) and state["nodes"].dtype != NODE_DTYPE:
                nodes = np.zeros(state["nodes"].shape, NODE_DTYPE)
                for name in state["nodes"].dtype.names:
                    nodes[name] = state["nodes"][name]
                state["nodes"] = nodes
            NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    with open(ORIGINAL, "rb") as f, pytest.warns(Warning):  # scikit-learn warns of the version it came from
        forest = NodeDtypeUnpickler(str(ORIGINAL), f, ensure_native_byte_order=False).load()
    archs = _subnets(1000)
    x = features(archs)
    expected = np.mean([tree.tree_.predict(x).reshape(len(archs)) for tree in forest.estimators_], axis=0)
    ours = AccuracySurrogate.load().predict(archs)
    assert len(forest.estimators_) == 100
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9)
    assert expected.std() > 0.5  # a real spread, not a constant


def test_the_converter_writes_the_shipped_arrays(tmp_path):
    out = tmp_path / "forest.safetensors"
    assert convert_acc_predictor.main([str(ORIGINAL), str(out)]) == 0
    converted, shipped = AccuracySurrogate.load(str(out)), AccuracySurrogate.load()
    assert converted.metadata["source_sha256"] == SOURCE_SHA256 == shipped.metadata["source_sha256"]
    assert converted.trees == 100
    for name in ("feature", "threshold", "left", "right", "value", "roots"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(shipped, name))


class _Boom:
    def __reduce__(self):
        return (subprocess.call, (["touch", "/tmp/alphanet_zoo_pwned"],))


def test_the_restricted_unpickler_refuses_anything_but_state(tmp_path):
    evil = tmp_path / "evil.joblib"
    evil.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load subprocess.call"):
        convert_acc_predictor.read_forest(evil)
    assert not Path("/tmp/alphanet_zoo_pwned").exists()
    plain = tmp_path / "dict.joblib"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(Exception):
        convert_acc_predictor.read_forest(plain)


def test_the_published_models_keep_the_papers_order():
    values = AccuracySurrogate.load().predict([model_info(m).arch for m in list_models()])
    assert list(values) == sorted(values)  # a0 < a1 < ... < a6 on the authors' predictor
    assert 67.0 < values[0] < 68.0 and 71.0 < values[-1] < 72.0


def test_surrogate_evaluations_are_binomial_draws_fixed_by_seed_and_subnet():
    archs = _subnets(2000, seed=1)
    clean = SurrogateEvaluator(0).top1(archs)
    np.testing.assert_array_equal(clean, AccuracySurrogate.load().predict(archs))
    a = SurrogateEvaluator(50_000, seed=7)
    first = [e.top1 for e in a(archs)]
    assert a.calls == 2000
    assert first == [e.top1 for e in SurrogateEvaluator(50_000, seed=7)(list(archs))]  # same seed: same draws
    assert first[:5] == [e.top1 for e in SurrogateEvaluator(50_000, seed=7)(archs[:5])]  # per subnet, not per call
    other = [e.top1 for e in SurrogateEvaluator(50_000, seed=8)(archs)]
    assert first != other
    p = clean / 100
    z = (np.array(first) - clean) / (100 * np.sqrt(p * (1 - p) / 50_000))
    assert abs(z.mean()) < 0.15 and 0.9 < z.std() < 1.1  # the binomial's spread (0.2 points at 70 %)
    assert all(round(v * 500) == v * 500 for v in first[:50])  # a count of 50,000 images
    with pytest.raises(Exception, match="surrogate-images"):
        SurrogateEvaluator(-1)


def test_nothing_loads_a_pickle_or_scikit_learn_at_run_time():
    code = ("import sys, pickle\n"
            "def refuse(*a, **k): raise AssertionError('a pickle was loaded')\n"
            "pickle.load = pickle.loads = pickle.Unpickler = refuse\n"
            "from alphanet_zoo.search.surrogate import SurrogateEvaluator\n"
            "from alphanet_zoo.config import SEARCH_SPACE\n"
            "print(SurrogateEvaluator(100)([SEARCH_SPACE.smallest()])[0].top1)\n"
            "print('sklearn' in sys.modules, 'joblib' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["False", "False"]
