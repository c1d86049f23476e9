"""The README's shell commands run, and its relative links point at files of the repository.

Every command of the README's ```bash blocks runs here and must exit 0, except the ones in
`LONG`, each with the reason it is left to its own test or to CI. `mechjax` is this
environment's command; each command runs in a temporary folder, so `--out out/...` lands
there.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# command (as written in the README, comments stripped) -> why it is not run here
LONG = {
    "make demo": "sets up the environment (venv, install) and runs the demo: CI runs it",
    "make test": "the whole suite, this test included",
    "mechjax reproduce induction-emergence --out out/induction --quick": (
        "minutes of training; its stages are tested by test_induction.py's smoke run"
    ),
    "mechjax reproduce arithmetic-cma --out out/cma --ops + * --templates 0": (
        "tens of minutes on SmolLM2; tests/test_arithmetic_cma.py runs it on 2 pairs"
    ),
    "mechjax reproduce entropy-neurons --out out/entropy --quick": (
        "about 15 minutes on two models; tests/test_entropy_neurons_repro.py runs its stages"
    ),
    "mechjax reproduce arithmetic-probes --out out/ap --quick": (
        "minutes of generation on two models; tests/test_arithmetic_probes_repro.py runs "
        "every stage at smoke size"
    ),
    "mechjax reproduce mechanistic-probe --out out/mp --quick": (
        "minutes of training; tests/test_mechanistic_probe*.py run its stages at smoke size"
    ),
    "mechjax reproduce robustness --out out/rob --quick": (
        "minutes of scoring on two models; tests/test_robustness_repro.py runs every stage "
        "at smoke size"
    ),
    "mechjax reproduce cognitive-biases --out out/cb --quick": (
        "minutes of generation on two models; tests/test_cognitive_biases_repro.py runs "
        "every stage at smoke size"
    ),
    "mechjax reproduce das --out out/das --quick": (
        "tens of minutes of DAS training on two models; tests/test_das_repro.py runs every "
        "stage at smoke size"
    ),
    "mechjax sae train smollm2-135m --site blocks.15.hook_resid_post --out out/sae": (
        "500 SAE steps on SmolLM2 activations; tests/test_sae_cli.py trains at tiny size"
    ),
    "mechjax sae eval out/sae/sae smollm2-135m": (
        "needs the SAE the train command writes; tests/test_sae_cli.py evaluates one"
    ),
    "mechjax reproduce dense-latents --out out/dense --quick": (
        "minutes of SAE training on SmolLM2; tests/test_sae_repro.py runs every stage at smoke size"
    ),
    "mechjax reproduce mib --out out/mib --quick": (
        "minutes of circuit discovery on SmolLM2; tests/test_mib_repro.py runs every stage at "
        "smoke size"
    ),
    "mechjax reproduce socratic-cot --out out/socratic --quick": (
        "minutes of training five students; tests/test_socratic_cot_repro.py runs every "
        "stage at smoke size"
    ),
    "mechjax reproduce coreference --out out/coref --quick": (
        "minutes of SmolLM2 over long documents; tests/test_coreference_repro.py runs every "
        "stage at smoke size"
    ),
    "mechjax reproduce groundedness --out out/grounded --quick": (
        "minutes of generation on two models; tests/test_groundedness.py runs every stage at "
        "smoke size"
    ),
    "mechjax reproduce fluid-representations --out out/fluid --quick": (
        "minutes of SmolLM2 and Gemma 3 over long contexts; "
        "tests/test_fluid_representations.py runs every stage at smoke size"
    ),
    "mechjax eval coref key.conll response.conll": (
        "needs two CoNLL files; tests/test_evals_coref.py::test_cli_scores_conll_files runs "
        "the command on the reference scorer's cases"
    ),
    "mechjax eval hle out/questions.jsonl smollm2-135m --chat": (
        "a minute of generation; tests/test_cli_eval.py runs the command on a tiny model"
    ),
    "mechjax reproduce steering --out out/steering --quick": (
        "tens of minutes of generation on two models; tests/test_steering_repro.py runs "
        "every stage in a smoke run"
    ),
    "mechjax steer smollm2-135m Describe a cat. --instruction detectable_format:title "
    "--layer 24 --check": (
        "a minute of vectors and generation; tests/test_steering.py::test_cli_steer runs "
        "the command with fewer pairs and tokens"
    ),
    "pip install .": (
        "installs into the running environment (it would replace the editable install); "
        "tests/test_packaging.py builds and installs the wheel in a temporary folder"
    ),
    "pip wheel --no-deps -w dist . && pip install dist/mechjax-0.1.0-py3-none-any.whl": (
        "the same install; tests/test_packaging.py covers the wheel"
    ),
}


def bash_words(text: str) -> dict[str, list[str]]:
    """Each command line of the ```bash blocks, comments dropped: its words joined by
    spaces (the key `LONG` uses) -> its words."""
    out = {}
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out[" ".join(words)] = words
    return out


def bash_commands(text: str) -> list[str]:
    return list(bash_words(text))


def _argv(command: str) -> list[str]:
    words = bash_words(README)[command]
    assert not {"&&", "||", "|", ";"} & set(words), f"{command!r}: one command per line here"
    if words[0] == "mechjax":
        exe = Path(sys.executable).with_name("mechjax")
        head = [str(exe)] if exe.exists() else [sys.executable, "-m", "mechjax.cli"]
        return head + words[1:]
    return words


def test_the_readme_has_the_commands_this_test_knows():
    commands = bash_commands(README)
    assert "mechjax info smollm2-135m" in commands and "make demo" in commands
    stale = set(LONG) - set(commands)
    assert not stale, f"LONG names commands the README no longer has: {stale}"


@pytest.mark.slow  # each command loads a model and compiles: about a minute in all
@pytest.mark.parametrize("command", [c for c in bash_commands(README) if c not in LONG])
def test_readme_command_runs(command, tmp_path):
    r = subprocess.run(_argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{command!r} exited {r.returncode}:\n{r.stderr[-2000:]}"
    assert r.stdout.strip(), f"{command!r} printed nothing"


def test_every_relative_link_of_the_readme_points_at_a_file():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    relative = [l.split("#")[0] for l in links if not re.match(r"[a-z]+:|#", l)]
    assert relative, "the README has relative links (CHANGELOG.md, docs/design.md, ...)"
    missing = [l for l in relative if not (ROOT / l).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    outside = [l for l in relative if not (ROOT / l).resolve().is_relative_to(ROOT)]
    assert not outside, f"README links outside the repository: {outside}"


def test_every_repository_path_the_readme_names_exists():
    """Paths in code spans (`models/llama.py`, `docs/scaling.md`) are links too, for a reader."""
    spans = re.findall(r"`([\w./-]+/[\w.-]+\.(?:py|md|json|png|toml))`", README)
    assert len(spans) > 5
    missing = [p for p in spans if not (ROOT / p).exists()]
    assert not missing, f"README names files that do not exist: {missing}"
