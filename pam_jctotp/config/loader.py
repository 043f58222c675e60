"""/etc/jctotp/config.yaml read from disk: YAML with every duplicate key found, the
line of each key (for the problems' "line N:"), and PyYAML's errors on one line."""

from __future__ import annotations

import os
from typing import Any

import yaml

from .checks import Problems
from .schema import Config
from .validate import parse_collect

DEFAULT_PATH = "/etc/jctotp/config.yaml"


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that finds a key given twice in one mapping: PyYAML keeps the last one
    silently, so `max_attempts: 5` high in the file and `max_attempts: 6` lower down
    would quietly mean 6. Each is a problem of its own (the others are still listed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for knode, _ in node.value:
            key = self.construct_object(knode, deep=True)
            try:
                first = seen.get(key)
                seen.setdefault(key, knode.start_mark.line + 1)
            except TypeError:
                continue   # an unhashable key: construct_mapping says so below
            if first is not None:
                self.duplicates.append(f"line {knode.start_mark.line + 1}: duplicate key "
                                       f"{key!r} (first on line {first}): remove one")
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str) -> tuple[Any, list[str]]:
    """The document, and its duplicate keys."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of each top-level key and of each sub-key (`password_hash.x`,
    `directory.uri`)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if isinstance(root, yaml.MappingNode):
        for knode, vnode in root.value:
            lines[str(knode.value)] = knode.start_mark.line + 1
            if isinstance(vnode, yaml.MappingNode):
                for sub, _ in vnode.value:
                    lines[f"{knode.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


def _yaml_error_line(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line (the journal shows a newline as \\x0a)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split())
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        text += f" ({exc.context} from line {exc.context_mark.line + 1})"
    return text


def load(path: str | os.PathLike[str] = DEFAULT_PATH, daemon: bool = True) -> Config:
    """The validated config, or one ConfigError naming every problem with its line."""
    return load_with_text(path, daemon)[0]


def load_with_text(path: str | os.PathLike[str], daemon: bool = True) -> tuple[Config, str]:
    """load(), and the very text that was validated (the daemon keeps a copy)."""
    cfg, problems, lines, text = _load(path, daemon)
    if problems.items:
        raise problems.error(lines, str(path))
    return cfg, text


def load_collect(path: str | os.PathLike[str] = DEFAULT_PATH, daemon: bool = False
                 ) -> tuple[Config, list[str]]:
    """For the CLI and doctor: the valid keys (defaults for the rest) and the
    problems as text, so a typo never stops `jctotp` reaching the daemon."""
    cfg, problems, lines, _ = _load(path, daemon)
    if not problems.items:
        return cfg, []
    return cfg, problems.error(lines, str(path)).problems


def _load(path: str | os.PathLike[str], daemon: bool
          ) -> tuple[Config, Problems, dict[str, int], str]:
    problems = Problems()
    text = ""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        raw, duplicates = _parse_yaml(text)
    except FileNotFoundError:
        problems.add("", "config file not found (pass --config FILE)")
        return Config(), problems, {}, text
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("", f"cannot read the config file: {exc}")
        return Config(), problems, {}, text
    except yaml.YAMLError as exc:
        problems.add("", f"not valid YAML: {_yaml_error_line(exc)}")
        return Config(), problems, {}, text
    cfg, problems = parse_collect(raw, daemon)
    for duplicate in duplicates:
        problems.add("", duplicate)
    return cfg, problems, key_lines(text), text
