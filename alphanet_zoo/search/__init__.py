"""Find subnets at a FLOPs budget: quick random draws, and evolutionary search on real accuracy.

    from alphanet_zoo.search import sample_at_flops
    arch = sample_at_flops(300, tolerance=5, seed=0)   # an ArchConfig of 295..305 MFLOPs

``alphanet-search`` (`alphanet_zoo.search.cli`) runs `EvolutionSearch` with a `SubnetEvaluator`
(BN calibration plus held-out accuracy) and writes the best config as JSON.
"""
from .evaluate import SubnetEvaluator, heldout_subset, load_calibration_images, load_heldout_images
from .evolution import Candidate, EvolutionSearch, SearchResult, pareto_front
from .sampling import crossover, flops_range, mutate, sample_at_flops, sample_in_range

__all__ = [
    "Candidate", "EvolutionSearch", "SearchResult", "SubnetEvaluator", "crossover", "flops_range",
    "heldout_subset", "load_calibration_images", "load_heldout_images", "mutate", "pareto_front",
    "sample_at_flops", "sample_in_range",
]
