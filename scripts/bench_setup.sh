#!/usr/bin/env bash
# Create .venv-bench: mechjax plus the peer libraries that scripts/bench compares it
# with (TransformerLens, nnsight, pyvene, penzai, HF transformers; scikit-learn for
# scripts/bench_probes.py; SAELens and EleutherAI sparsify for scripts/bench_sae.py), on CPU
# torch 2.13.0.
#
#     bash scripts/bench_setup.sh            # then: .venv-bench/bin/python scripts/bench
#
# A separate environment on purpose: the peers may pin other torch/transformers versions,
# and the project's own .venv must not get them. torch is pinned with a constraints file
# for every step, so no peer can replace it (or pull a CUDA build); the script stops if
# the torch it ends with is not 2.13.0 on CPU.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-bench}
# scikit-learn: the usual way of scripts/bench_probes.py (one LogisticRegression per layer);
# the test extra has it too, listed here so the probing benchmark does not depend on that
PEERS=(transformers accelerate transformer-lens nnsight pyvene penzai scikit-learn sae-lens eai-sparsify auto-circuit)

"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.13.0" > "$CONSTRAINTS"
# TransformerLens 4.3's TransformerBridge.generate repeats one token after the first with
# transformers 5.24 (its KV-cache path no longer matches); with 5.23 it generates the same
# tokens as HF generate, so the bench pins 5.23 until TransformerLens follows
echo "transformers==5.23.0" >> "$CONSTRAINTS"

# 1. CPU torch first (a +cpu wheel where one is on offer), then mechjax itself.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -c "$CONSTRAINTS" -e ".[test]" psutil

# 2. The peers, one by one, each checked not to touch torch before it is installed.
for pkg in "${PEERS[@]}"; do
  plan=$("$PY" -m pip install --dry-run -c "$CONSTRAINTS" "$pkg" 2>&1) || {
    echo "$plan" | tail -5
    echo "bench_setup: $pkg cannot be installed next to torch 2.13.0; skipped" >&2
    continue
  }
  if echo "$plan" | grep -E "Would install.* torch-[0-9]" > /dev/null; then
    echo "bench_setup: $pkg would replace torch; skipped" >&2
    continue
  fi
  "$PY" -m pip install -q -c "$CONSTRAINTS" "$pkg"
done

# 3. Refuse a torch that is not the CPU 2.13.0 we pinned.
"$PY" - <<'EOF'
import torch
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert torch.version.cuda is None, f"CUDA torch installed ({torch.version.cuda})"
print(f"torch {torch.__version__} (CPU)")
EOF
"$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|accelerate|transformer.lens|nnsight|pyvene|penzai|scikit.learn|jax|jaxlib|mechjax) "
echo "ready: $VENV/bin/python scripts/bench --quick"
