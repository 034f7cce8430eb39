"""Parity beyond the reference file: other salts, seeds and architectures, against an independent oracle.

tests/official_oracle.py re-derives the network from docs/design.md over the official checkpoint's keys; the
package must agree with it for random subnets of the space, on weights it has never seen.
"""
import random

import pytest
import torch
from conftest import det
from official_oracle import official_flops, official_forward

from alphanet_zoo import SEARCH_SPACE, Supernet, count_flops
from alphanet_zoo.checkpoint import read_state_dict
from alphanet_zoo.preprocessing import resize_to_resolution

# The reference parity tests run in the quick loop; these salted checkpoints (seconds each) in CI.
pytestmark = pytest.mark.slow

TOL = 1e-4


@pytest.fixture(scope="module", params=[1, 7], ids=lambda s: f"salt{s}")
def salted(request, official_checkpoint_factory):
    path = official_checkpoint_factory(request.param)
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    return request.param, state, Supernet.from_checkpoint(path).eval()


def _archs(salt, n):
    rng = random.Random(1000 + salt)
    picks = [SEARCH_SPACE.smallest(), SEARCH_SPACE.largest()] + [SEARCH_SPACE.sample(rng) for _ in range(n)]
    # small inputs keep this fast; the network is resolution-agnostic, odd sides exercise the padded pooling
    return [(a, rng.choice([64, 72, 97, 128])) for a in picks]


def test_extracted_subnets_match_the_oracle(salted):
    salt, state, supernet = salted
    for i, (arch, side) in enumerate(_archs(salt, 4)):
        x = det(10 * salt + i, (2, 3, side, side))
        with torch.no_grad():
            ours = supernet.extract(arch)(x)
            oracle = official_forward(state, arch.to_dict(), x, train=False)
        assert (ours - oracle).abs().max().item() <= TOL, arch


def test_supernet_training_mode_matches_the_oracle(salted):
    salt, state, supernet = salted
    supernet.train()
    try:
        for i, (arch, side) in enumerate(_archs(salt, 2)):
            x = resize_to_resolution(det(500 + i, (3, 3, 64, 64)), side)
            with torch.no_grad():
                ours = supernet(x, arch)
                oracle = official_forward(state, arch.to_dict(), x, train=True)
            assert (ours - oracle).abs().max().item() <= TOL, arch
    finally:
        supernet.eval()


def test_flops_match_an_independent_count():
    rng = random.Random(0)
    for _ in range(200):
        arch = SEARCH_SPACE.sample(rng)
        assert count_flops(arch) == pytest.approx(official_flops(arch.to_dict()), abs=1e-6)


@pytest.mark.parametrize("key", ["a0", "a5_1"])
def test_the_oracle_itself_reproduces_the_reference(reference, official_checkpoint_factory, key):
    state = {k.removeprefix("module."): v
             for k, v in read_state_dict(official_checkpoint_factory(reference["salt"])).items()}
    sub = reference["subnets"][key]
    with torch.no_grad():
        logits = official_forward(state, sub["config"], det(sub["input"]["seed"], sub["input"]["shape"]), train=False)
    assert (logits - torch.tensor(sub["logits"]).view(logits.shape)).abs().max().item() <= TOL
    assert official_flops(sub["config"]) == pytest.approx(sub["mflops_official_counter"], abs=1e-6)
