"""Convert the AttentiveNAS authors' accuracy predictor (``acc_predictor.joblib``) to plain arrays.

The file is a scikit-learn 0.23.2 ``RandomForestRegressor`` (100 trees) pickled by joblib. It is read
here once, by a restricted unpickler that never imports scikit-learn or joblib: every class it names
is mapped to a stand-in that only keeps its pickled state, and numpy arrays (joblib writes their raw
bytes right after the pickle's BUILD of a ``NumpyArrayWrapper``) are read back as plain arrays. The
trees are written as one safetensors file of flat arrays (see `alphanet_zoo.search.surrogate`) with
the source file's sha256 in its metadata. Nothing loads a pickle at run time.

    python tools/convert_acc_predictor.py acc_predictor.joblib alphanet_zoo/resources/attentivenas_acc_predictor.safetensors

The predictor is the AttentiveNAS authors' work (facebookresearch/AttentiveNAS, CC-BY-NC 4.0).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save

# modules whose classes become state-keeping stand-ins (never imported)
_STAND_IN_MODULES = ("sklearn.", "joblib.")
# the only real callables the pickle may name: numpy's own reconstructors
_multiarray = getattr(np, "_core", None) or np.core
_NUMPY = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray,
          ("numpy.core.multiarray", "_reconstruct"): _multiarray.multiarray._reconstruct,
          ("numpy.core.multiarray", "scalar"): _multiarray.multiarray.scalar}


class StandIn:
    """An object of a class the pickle names; keeps the constructor arguments and the pickled state."""

    qualname = "?"

    def __init__(self, *args):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


def _stand_in(module: str, name: str) -> type:
    return type(name, (StandIn,), {"qualname": f"{module}.{name}"})


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles scikit-learn/joblib objects as stand-ins; refuses any other global."""

    def __init__(self, file: io.BufferedReader) -> None:
        super().__init__(file)
        self.dispatch = dict(pickle._Unpickler.dispatch)
        self.dispatch[pickle.BUILD[0]] = RestrictedUnpickler.load_build

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY:
            return _NUMPY[module, name]
        if module.startswith(_STAND_IN_MODULES):
            return _stand_in(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the predictor file")

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)
        obj = self.stack[-1]
        if isinstance(obj, StandIn) and obj.qualname.endswith("NumpyArrayWrapper"):
            self.stack[-1] = self._read_array(obj.state)

    def _read_array(self, state: dict) -> np.ndarray:
        dtype, shape, order = np.dtype(state["dtype"]), tuple(state["shape"]), state["order"]
        if dtype.hasobject:
            raise pickle.UnpicklingError("refusing an object array in the predictor file")
        padding = state.get("numpy_array_alignment_bytes")
        if padding is not None:  # joblib >= 1.2 pads the array to an alignment: one length byte, then padding
            skip = self.read(1)[0]
            self.read(skip)
        count = int(np.prod(shape)) if shape else 1
        data = self.read(count * dtype.itemsize)
        array = np.frombuffer(data, dtype=dtype).copy()
        if order == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def read_forest(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The forest's trees as flat arrays: per node ``feature`` (-2 at a leaf), ``threshold``, ``left``,
    ``right`` (indices into the flat arrays, -1 at a leaf) and ``value``; ``roots``: each tree's first node."""
    with open(path, "rb") as f:
        forest = RestrictedUnpickler(f).load()
    if not forest.qualname.endswith("RandomForestRegressor"):
        raise ValueError(f"{path}: expected a RandomForestRegressor, found {forest.qualname}")
    state = forest.state
    features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
    offset = 0
    for estimator in state["estimators_"]:
        tree = estimator.state["tree_"]
        nodes = tree.state["nodes"]
        n = int(tree.state["node_count"])
        value = np.asarray(tree.state["values"], dtype=np.float64).reshape(n, -1)
        if value.shape[1] != 1:
            raise ValueError(f"{path}: expected one output per tree, found {value.shape[1]}")
        left, right = nodes["left_child"].astype(np.int64), nodes["right_child"].astype(np.int64)
        leaf = left < 0
        features.append(np.where(leaf, -2, nodes["feature"]).astype(np.int32))
        thresholds.append(nodes["threshold"].astype(np.float64))
        lefts.append(np.where(leaf, -1, left + offset).astype(np.int32))
        rights.append(np.where(leaf, -1, right + offset).astype(np.int32))
        values.append(value[:, 0])
        roots.append(offset)
        offset += n
    return {"feature": np.concatenate(features), "threshold": np.concatenate(thresholds),
            "left": np.concatenate(lefts), "right": np.concatenate(rights), "value": np.concatenate(values),
            "roots": np.asarray(roots, dtype=np.int32),
            "n_features": np.asarray([int(state["n_features_"])], dtype=np.int32)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="acc_predictor.joblib from facebookresearch/AttentiveNAS")
    parser.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    digest = hashlib.sha256(Path(args.source).read_bytes()).hexdigest()
    arrays = read_forest(args.source)
    metadata = {"source": "facebookresearch/AttentiveNAS acc_predictor.joblib", "source_sha256": digest,
                "license": "CC-BY-NC-4.0", "model": "scikit-learn 0.23.2 RandomForestRegressor",
                "inputs": "resolution, width (9), depth (7), kernel_size (7), expand_ratio (7)",
                "trees": str(len(arrays["roots"]))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(save(arrays, metadata=metadata))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"{out}: {len(arrays['roots'])} trees, {len(arrays['value'])} nodes, source sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
