"""Reading a user's YAML file (an experiment, a DEPLOY.yaml, a profile), with one-line errors.

The one place a YAML file is read: once, as bytes, decoded strictly as UTF-8 (a UTF-8 BOM is
allowed), so a binary file, a UTF-16 file or a directory ends in an InputError naming the file,
not in a UnicodeDecodeError traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cato_core.errors import InputError

TEXT_FILE = "a UTF-8 YAML text file"
# What YAML 1.1 (and so PyYAML) refuses in a document: C0 controls but tab, newline and return, etc.
_NOT_YAML_TEXT = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed file; InputError naming the file and ``what`` it should be, or the bad line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(str(path), what, "a YAML file, not a directory")
    if not path.is_file():
        raise InputError(str(path), what, "an existing YAML file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(str(path), what, f"a readable YAML file ({e.strerror or e})") from None
    return parse_yaml(data, str(path), what)


def parse_yaml(data: bytes, source: str, what: str) -> Any:
    """YAML from a file's bytes; ``source`` names the file in an InputError."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = len(data) - len(e.object) + e.start  # e.object lacks a BOM that was skipped
        found = f"byte 0x{data[offset]:02x} at offset {offset}"
        raise InputError(source, what, f"{TEXT_FILE} ({found} is not UTF-8)") from None
    bad = _NOT_YAML_TEXT.search(text)
    if bad:
        offset, char = len(data) - len(text[bad.start() :].encode()), ord(bad.group())
        found = f"byte 0x{char:02x}" if char < 0x80 else f"character U+{char:04X}"
        raise InputError(source, what, f"{TEXT_FILE} ({found} at offset {offset} is not allowed in YAML)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise InputError(source, where, "well-formed YAML") from None
