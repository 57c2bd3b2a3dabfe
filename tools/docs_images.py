"""Make the documentation's pictures and the demo's table from one real run (``make docs-images``).

1. Runs the shortcut demo (``examples/shortcut_detection.py``) into a fresh log directory, with ``--export-docs``
   (the grids before and after the onset).
2. Writes the table the demo printed, and its first alert, into README.md and docs/shortcut_detection.md between
   ``<!-- demo-table -->`` and ``<!-- /demo-table -->``.
3. Writes the HTML report of the run (``lightning-xai report``) and prints its size.
4. Starts TensorBoard with the command the demo prints and takes screenshots in headless Chromium of the Custom
   Scalars, Scalars, Images and Text tabs and of the report, into docs/images/. The URL's state sets the smoothing
   to 0 and a tag filter, so that the demo's alert and threshold are on the first screen.

Needs Chromium (``apt-get install -y chromium``); about two minutes on 2 CPU cores.

    python tools/docs_images.py [--out docs/images] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.shortcut_detection import TENSORBOARD_SAMPLES  # noqa: E402
from lightning_xai.report import write_report  # noqa: E402

MARKERS = ("<!-- demo-table -->", "<!-- /demo-table -->")
TABLE_FILES = ("README.md", "docs/shortcut_detection.md")
#: (file, URL fragment, window size): each shows the demo's alert and threshold without scrolling
TENSORBOARD_SHOTS = (
    ("tensorboard_dashboard.png", "#custom_scalars&_smoothingWeight=0", (1400, 760)),
    ("tensorboard_scalars.png", "#scalars&_smoothingWeight=0&tagFilter=xai%2Fsummary%2F", (1400, 760)),
    ("tensorboard_sheet.png", "#images&tagFilter=xai%2Fsheet%24%7Calert%2Fevidence", (1400, 1350)),
    ("tensorboard_text.png", "#text&tagFilter=xai%2F(alerts%7Csettings)", (1400, 900)),
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=20000",
)


def chromium() -> str:
    """The Chromium binary, or exit with what to install."""
    found = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found is None:
        sys.exit("Chromium is needed for the screenshots: apt-get install -y chromium")
    return found


def screenshot(url: str, out: Path, size: tuple[int, int]) -> None:
    """One headless Chromium screenshot of ``url`` at ``size`` (a fresh profile each time)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        subprocess.run([*command, f"--screenshot={out}", url], capture_output=True, timeout=180, check=True)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def run_demo(logdir: Path, images: Path) -> str:
    """Run the demo as ``make demo`` does (plus ``--export-docs``); its standard output."""
    command = [sys.executable, str(ROOT / "examples" / "shortcut_detection.py"), "--logdir", str(logdir)]
    done = subprocess.run([*command, "--export-docs", str(images)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"the demo failed:\n{done.stderr[-3000:]}")
    return done.stdout


def demo_block(stdout: str) -> str:
    """The table the demo printed and its first alert, as a fenced block for the docs.

    Example::

        >>> demo_block("noise\\n\\nepoch  clean\\n    0  0.5  \\n\\nFirst alert at epoch 5: x.\\n\\nSee it")
        '```text\\nepoch  clean\\n    0  0.5\\n\\nFirst alert at epoch 5: x.\\n```'
    """
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    table = [line.rstrip() for line in lines[start:end]]
    first = next((line.strip() for line in lines[end:] if line.startswith(("First alert", "No alert"))), "")
    return "```text\n" + "\n".join(table) + ("\n\n" + first if first else "") + "\n```"


def write_block(path: Path, block: str) -> None:
    """Replace what lies between the markers in ``path`` by ``block``."""
    text = path.read_text(encoding="utf-8")
    begin, end = MARKERS
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"{path}: no {begin} ... {end} markers")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text), encoding="utf-8")
    print(f"wrote the demo's table into {path.relative_to(ROOT)}")


def start_tensorboard(logdir: Path, sheets: int) -> tuple[subprocess.Popen[bytes], int]:
    """TensorBoard with the demo's printed flags, once it serves all ``sheets`` sheets."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = int(s.getsockname()[1])
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port)]
    server = subprocess.Popen([*command, *TENSORBOARD_SAMPLES.split()], stderr=subprocess.DEVNULL)
    run = next(p.parent.relative_to(logdir).as_posix() for p in logdir.rglob("events.out.tfevents.*"))
    url = f"http://localhost:{port}/data/plugin/images/images?run={run}&tag=xai/sheet&sample=0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                if len(json.loads(answer.read())) >= sheets:
                    return server, port
        except OSError:
            continue
    server.terminate()
    sys.exit(f"TensorBoard did not serve {sheets} sheets within 120 s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="where the pictures go")
    parser.add_argument("--keep", default=None, help="keep the run's logs and report in this directory")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chromium()
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="docs_images_"))
    logdir = work / "logs" / "shortcut"
    if logdir.exists():
        shutil.rmtree(logdir)
    stdout = run_demo(logdir, out)
    block = demo_block(stdout)
    print(block)
    for name in TABLE_FILES:
        write_block(ROOT / name, block)

    report = work / "report.html"
    runs = write_report(str(logdir), str(report), "lightning-xai report")
    print(f"report: {report.stat().st_size / 1e6:.2f} MB, {sum(len(r.evaluations) for r in runs)} evaluations")
    screenshot(report.as_uri(), out / "report.png", (1400, 1000))

    server, port = start_tensorboard(logdir, sum(len(r.sheets) for r in runs))
    try:
        for name, fragment, size in TENSORBOARD_SHOTS:
            screenshot(f"http://localhost:{port}/{fragment}", out / name, size)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
