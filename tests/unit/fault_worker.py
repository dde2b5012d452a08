"""A stand-in child for fault tests: `python -m fault_worker CELL.json OUT_DIR PARENT_PID`.

The fault is real (a raise, a SIGKILL, a hang with a child, a flood); only the
model work is left out. The cell's variant names the fault.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main(cell_path: str, out_dir: str, parent_pid: str = "") -> None:
    cell = json.loads(Path(cell_path).read_text())
    fault = cell["variant"]
    print("@@evalq phase=load", flush=True)
    if fault == "raise":
        raise RuntimeError("boom in measurement")
    if fault == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(out_dir, "child.pid").write_text(str(child.pid))
        Path(os.environ["FAULT_PID_FILE"]).write_text(str(child.pid))
        time.sleep(600)
    if fault == "flood":
        block = "x" * 1023 + "\n"
        for _ in range(int(os.environ.get("FAULT_FLOOD_MB", "50")) * 1024):
            sys.stdout.write(block)
        sys.stdout.write("LAST LINE\n")
        sys.stdout.flush()
    if fault == "slow":  # the fenced-claim test: a cell long enough to stop its runner in the middle
        time.sleep(float(os.environ.get("FAULT_SLEEP_S", "5")))
    acc = float(os.environ.get("FAULT_ACC", "1.0"))  # which runner measured it
    Path(out_dir, "result.json").write_text(json.dumps({"status": "ok", "error": None, "metrics": {"t": {"acc": acc}}}))


if __name__ == "__main__":
    main(*sys.argv[1:])
