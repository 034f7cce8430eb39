"""Find subnets under a budget: quick random draws, and evolutionary search on real accuracy.

    from alphanet_zoo.search import sample_at_flops
    arch = sample_at_flops(300, tolerance=5, seed=0)   # an ArchConfig of 295..305 MFLOPs

``alphanet-search`` (`alphanet_zoo.commands.search`) runs `EvolutionSearch` with a `SubnetEvaluator`
(BN calibration plus held-out accuracy), in one process or split across the processes of a
``torchrun`` run (`alphanet_zoo.search.parallel`), under a FLOPs range and/or a latency cap
predicted from a table measured on this machine (`alphanet_zoo.search.latency`), and writes the
best as JSON.
"""
from .budget import Budget
from .evaluate import SubnetEvaluator, heldout_subset, load_calibration_images, load_heldout_images
from .evolution import Candidate, Evaluation, EvolutionSearch, SearchResult, pareto_front, random_search
from .sampling import crossover, flops_range, mutate, sample_at_flops, sample_in_range

__all__ = [
    "Budget", "Candidate", "Evaluation", "EvolutionSearch", "SearchResult", "SubnetEvaluator", "crossover",
    "flops_range", "heldout_subset", "load_calibration_images", "load_heldout_images", "mutate", "pareto_front",
    "random_search", "sample_at_flops", "sample_in_range",
]
