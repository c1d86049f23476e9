"""Circuit discovery: the model's node/edge graph, edge scores, circuit evaluation.

- `graph`: the EAP-IG graph (`graph_of`, `Graph`, `ungroup_gqa`);
- `scores`: EAP, EAP-IG and exact edge scores;
- `evaluation`: `evaluate_graph` (edges outside a circuit corrupted) and MIB's
  `faithfulness` (CPR, CMD).
"""

from mechjax.circuits.evaluation import MIB_FRACTIONS, evaluate_graph, faithfulness
from mechjax.circuits.graph import Graph, graph_of, ungroup_gqa
from mechjax.circuits.scores import eap, eap_ig, exact_edge_scores

__all__ = [
    "Graph",
    "MIB_FRACTIONS",
    "eap",
    "eap_ig",
    "evaluate_graph",
    "exact_edge_scores",
    "faithfulness",
    "graph_of",
    "ungroup_gqa",
]
