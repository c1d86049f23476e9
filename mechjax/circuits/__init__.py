"""Circuit discovery: the model's node/edge graph, edge and node scores, circuit
construction, evaluation and MIB's faithfulness, learned edge masks.

- `graph`: the EAP-IG graph (`graph_of`, `Graph`, `ungroup_gqa`) and the table of
  families it is defined for (`FAMILY_GRAPHS`);
- `scores`: EAP, EAP-IG (inputs, activations), clean-corrupted, exact edge scores, node
  and neuron scores;
- `ifr`: information flow routes (clean run only);
- `construction`: top-n, greedy, node and neuron circuits, pruning, weighted edge count;
- `evaluation`: `evaluate_graph` (edges outside a circuit corrupted, mean- or
  zero-ablated);
- `faithfulness`: MIB's CPR, CMD and mean f over edge fractions; AUROC against a
  ground-truth circuit;
- `masks`: learned edge masks (hard concrete, L0), one per sparsity target, trained as
  one vmapped program;
- `draw`: a circuit drawn with its nodes by layer.
"""

from mechjax.circuits.construction import (
    circuits_at,
    greedy,
    neuron_circuit,
    node_circuit,
    prune,
    top_n,
    weighted_edge_count,
)
from mechjax.circuits.evaluation import ABLATIONS, evaluate_graph
from mechjax.circuits.faithfulness import MIB_FRACTIONS, area_scores, auroc, faithfulness
from mechjax.circuits.graph import FAMILY_GRAPHS, Graph, graph_of, ungroup_gqa
from mechjax.circuits.ifr import information_flow_routes
from mechjax.circuits.scores import clean_corrupted, eap, eap_ig, exact_edge_scores, node_scores

__all__ = [
    "ABLATIONS",
    "FAMILY_GRAPHS",
    "Graph",
    "MIB_FRACTIONS",
    "area_scores",
    "auroc",
    "circuits_at",
    "clean_corrupted",
    "eap",
    "eap_ig",
    "evaluate_graph",
    "exact_edge_scores",
    "faithfulness",
    "graph_of",
    "greedy",
    "information_flow_routes",
    "neuron_circuit",
    "node_circuit",
    "node_scores",
    "prune",
    "top_n",
    "ungroup_gqa",
    "weighted_edge_count",
]
