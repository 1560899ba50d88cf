"""Execute the notebooks in place and keep their outputs small, so that they show something when opened on GitHub.

    python notebooks/execute.py                      # both notebooks, on the real MovieLens-100K
    M6REC_SWEEP_DIR=logs/ctr_lora/multiruns/<timestamp> python notebooks/execute.py ablation_analysis.ipynb

Kept: printed text (at most MAX_LINES lines a cell), displayed values (text, and HTML tables under MAX_HTML
characters) and the notebook's last image; dropped: stderr, other images, timing metadata. Paths under the
repository are written relative to it. The tests execute the notebooks again on fixtures (tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOKS = ["behaviour_as_text.ipynb", "ablation_analysis.ipynb"]
MAX_LINES = 30
MAX_HTML = 6000
IMAGE = "image/png"


def _relative(text: str) -> str:
    return text.replace(f"{ROOT}/", "").replace(str(ROOT), ".")


def _small(output: dict) -> dict | None:
    """The output with paths made relative and long text cut, or None if it is dropped (stderr, an object repr)."""
    if output["output_type"] == "stream":
        if output["name"] != "stdout":
            return None
        lines = _relative(output["text"]).splitlines(keepends=True)
        cut = [f"… ({len(lines) - MAX_LINES} more lines)\n"] if len(lines) > MAX_LINES else []
        output["text"] = "".join(lines[:MAX_LINES] + cut)
        return output
    data = output.get("data")
    if data is None:  # an error: kept, so that it shows
        return output
    for key in list(data):
        if key not in ("text/plain", "text/html", IMAGE) or (key == "text/html" and len(data[key]) > MAX_HTML):
            del data[key]
    if "text/plain" in data:
        data["text/plain"] = _relative(data["text/plain"])
    if IMAGE not in data and data.get("text/plain", "").startswith(("<IPython.core.display", "<Figure")):
        return None
    return output


def shrink(nb: nbformat.NotebookNode) -> None:
    """Shrink every output in place; keep only the last image of the notebook."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    images = [o for cell in code for o in cell.outputs if IMAGE in o.get("data", {})]
    for output in images[:-1]:
        del output["data"][IMAGE]
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    for cell in code:
        cell.outputs = [o for o in (_small(o) for o in cell.outputs) if o is not None]


def main(names: list[str]) -> None:
    """Execute each named notebook (default: all) from its folder, shrink its outputs and write it back."""
    for name in names or NOTEBOOKS:
        path = HERE / name
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(HERE)}}
        )
        client.execute()
        shrink(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
