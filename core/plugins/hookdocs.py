"""Generate ``docs/plugin_hooks.md`` from the hookspec docstrings.

Run ``python -m carecrm.core.plugins.hookdocs > docs/plugin_hooks.md``; a test checks that the
committed file equals the generated text, so the reference cannot drift from the code.
"""

from __future__ import annotations

import inspect
import sys

from carecrm.core.plugins import hookspecs


def render() -> str:
    """The Markdown hook reference: one section per hook, with its signature, call
    options and docstring."""
    out = [
        "# Plugin hook reference",
        "",
        "Generated from `core/plugins/hookspecs.py` by `python -m carecrm.core.plugins.hookdocs`; do not edit by hand.",
        "",
        inspect.cleandoc(hookspecs.__doc__ or ""),
        "",
    ]
    for name in hookspecs.hook_names():
        func = getattr(hookspecs, name)
        opts = getattr(func, "carecrm_spec", {}) or {}
        flags = [k for k in ("firstresult", "historic") if opts.get(k)]
        sig = str(inspect.signature(func)).replace("'", "")
        out += [f"## `{name}`", "", "```python", f"def {name}{sig}", "```", ""]
        if flags:
            out += [f"Call options: {', '.join(flags)}.", ""]
        out += [inspect.cleandoc(func.__doc__ or ""), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
