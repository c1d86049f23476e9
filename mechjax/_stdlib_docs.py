"""Docstrings of standard-library modules, collected in a fresh interpreter.

Run as a script (`python -I _stdlib_docs.py '["json", ...]'`) by `mechjax.corpus`: a
module's attributes depend on what the running process has imported or patched (a test
suite's libraries add to or wrap stdlib members), and the corpus must be the same text
whatever the caller's state. Prints a JSON list, one string per module that imports.
Imports nothing from mechjax, so the child process holds only the stdlib.
"""

import importlib
import inspect
import json
import sys
import warnings


def module_docstrings(module) -> str:
    """The module's docstring, then its own public classes (with public methods) and
    functions, in sorted order; each distinct docstring once."""
    parts = [inspect.getdoc(module) or ""]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        parts.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for member_name, member in sorted(vars(obj).items()):
                if member_name.startswith("_"):
                    continue
                doc = getattr(member, "__doc__", None)
                if isinstance(member, (property, staticmethod, classmethod)) or inspect.isroutine(
                    member
                ):
                    parts.append(inspect.cleandoc(doc) if isinstance(doc, str) else "")
    return "\n\n".join(dict.fromkeys(p for p in parts if p))


def collect(names) -> list:
    docs = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecated modules warn on import
                module = importlib.import_module(name)
        except Exception:  # not built on this platform: skipped, as documented
            continue
        docs.append(module_docstrings(module))
    return docs


if __name__ == "__main__":
    json.dump(collect(json.loads(sys.argv[1])), sys.stdout)
