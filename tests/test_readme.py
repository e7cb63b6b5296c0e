"""The README's Python examples run as written."""
import os
import re
from pathlib import Path

import elutriton

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    environ = dict(os.environ)
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), {})
    finally:  # an example may put a tuned table to use (ELUTRITON_CONFIG_DIR): not for others
        os.environ.clear()
        os.environ.update(environ)
        elutriton.clear_plans()
