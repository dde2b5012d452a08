"""llama.cpp's convert_hf_to_gguf.py, which gguf-<type> variants convert a model's weights with:
where it is (`converter_path`), how `evalq gguf-converter` installs the one matching the
installed llama-cpp-python from its source distribution, and how a conversion runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

CONVERTER_ENV = "EVALQ_LLAMA_CPP_CONVERTER"
# Chart marker of each type: open (GGUF) where the transformers variants are filled, the
# shape by nominal bits, a colour of its own, so every type is told apart without colour too.


def converter_path() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py: $EVALQ_LLAMA_CPP_CONVERTER, else the one
    `evalq gguf-converter` put beside this environment for the installed llama-cpp-python."""
    if os.environ.get(CONVERTER_ENV):
        return Path(os.environ[CONVERTER_ENV])
    try:
        installed = version("llama_cpp_python")
    except PackageNotFoundError:
        return None
    return converter_home(installed) / "convert_hf_to_gguf.py"


def converter_home(llama_cpp_version: str) -> Path:
    return Path(sys.prefix) / "share" / "evalq" / f"llama.cpp-{llama_cpp_version}"


def convert_into(out: Path, model_dir: str, outtype: str, converter: str) -> None:
    """llama.cpp's convert_hf_to_gguf.py, in its own process (it imports torch and the weights)."""
    cmd = [sys.executable, converter, model_dir, "--outtype", outtype, "--outfile", str(out / "model.gguf")]
    # without NO_LOCAL_GGUF the converter imports the gguf-py shipped beside it, its own version
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (out / "convert.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}): {tail[0]}; log in {out / 'convert.log'}")
    from evalq.backends.llamacpp import file_type_name

    written = (file_type_name(out / "model.gguf") or outtype).lower().removeprefix("all_")  # ALL_F32 → f32
    (out / "evalq-gguf.json").write_text(json.dumps({"outtype": written, "command": cmd[1:]}, indent=1))


CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def install_converter(sdist: Path | None = None, log: Any = print) -> Path:
    """Put llama.cpp's converter (convert_hf_to_gguf.py with its `conversion`
    package and gguf-py) matching the installed llama-cpp-python beside this
    environment, from llama-cpp-python's source distribution (pip download, or
    `sdist`, the .tar.gz pip built the extra from)."""
    import shutil
    import tarfile
    import tempfile

    installed = version("llama_cpp_python")
    home = converter_home(installed)
    if (home / "convert_hf_to_gguf.py").is_file():
        log(f"llama.cpp's converter for llama-cpp-python {installed} is already in {home}")
        return home
    if sdist is not None and not Path(sdist).name.endswith(f"-{installed}.tar.gz"):
        log(f"{sdist} is not llama-cpp-python {installed}'s source: downloading the matching one")
        sdist = None
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            log(f"downloading llama-cpp-python {installed}'s source distribution (~77 MB) for its converter")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={installed}", "-d", tmp], check=True)
            sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        staging = Path(tmp) / "converter"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                _, _, rest = member.name.partition("/vendor/llama.cpp/")
                if rest and rest.startswith(CONVERTER_MEMBERS) and (member.isfile() or member.isdir()):
                    member.name = rest
                    tar.extract(member, staging, filter="data")
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise RuntimeError(f"{sdist} holds no vendor/llama.cpp/convert_hf_to_gguf.py")
        home.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.move(str(staging), home)
    log(f"llama.cpp's converter for llama-cpp-python {installed} is in {home}")
    return home
