"""Task generators: clean/corrupted token batches with answer tokens, from a seed.

Each generator takes a tokenizer (mechjax's `Tokenizer`, or anything with
`encode(text, add_bos=...)` and `decode(ids)`) and returns a `TaskBatch` whose clean and
corrupted prompts all have the same token length, so positions line up between the two
runs. Whether a position index means the same token role in every row is
`TaskBatch.aligned`: `ioi` keeps one layout of its named positions by default
(`aligned=False` mixes templates; sweep those over `batch.positions`, one index per row).
One module per task family:

- `ioi`: indirect-object identification (Wang et al. 2022), MIB's `s2_io_flip` and the
  ABC counterfactual.
- `arithmetic`: the two-operand templates of Stolfo et al. (EMNLP 2023).
- `retrieval`: that paper's controls, `number_retrieval` and `factual_recall`.
- `greater_than`: Hanna et al. (2023).
- `induction`: repeated random tokens.
- `mcqa`: MIB's copy-colors multiple choice and ARC-style questions from a local JSONL
  file (`multiple_choice`), each with the symbol counterfactual.
- `blocksworld`: the PlanBench Blocksworld domain (simulator, plan validator, planner,
  random walks) with renameable action and predicate names (`STANDARD`, `MYSTERY`,
  `random_naming`); text, not a `TaskBatch`.
- `batch`: `TaskBatch`, `single_token`, `from_pair`, `check_spacing` and the shared batch
  builder.

An answer that is not a single token raises `TaskError`: metrics read one logit per
answer. A word answer without its leading space after a word warns (`check_spacing`).
"""

from mechjax.tasks import blocksworld
from mechjax.tasks.arithmetic import ARITHMETIC_TEMPLATES, arithmetic
from mechjax.tasks.batch import TaskBatch, TaskError, check_spacing, from_pair, single_token
from mechjax.tasks.greater_than import greater_than
from mechjax.tasks.induction import induction
from mechjax.tasks.ioi import ABBA_TEMPLATES, BABA_TEMPLATES, ioi
from mechjax.tasks.mcqa import mcqa, multiple_choice
from mechjax.tasks.retrieval import ENTITY_TEMPLATES, factual_recall, number_retrieval

__all__ = [
    "ABBA_TEMPLATES",
    "ARITHMETIC_TEMPLATES",
    "BABA_TEMPLATES",
    "ENTITY_TEMPLATES",
    "TaskBatch",
    "TaskError",
    "arithmetic",
    "blocksworld",
    "check_spacing",
    "factual_recall",
    "from_pair",
    "greater_than",
    "induction",
    "ioi",
    "mcqa",
    "multiple_choice",
    "number_retrieval",
    "single_token",
]
