"""Per-environment presets: common/presets.toml, a section of settings per environment family.

`resolve_preset(name, env)` gives the section's name and settings: `name` "auto" picks the first
section whose `envs` patterns match `env`, else the section its game family names
(common/families/), "none" gives none, any other name must be a section. common.config applies them between the defaults and a --config file.
"""

from __future__ import annotations

import fnmatch
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from common.config import ConfigError

PRESETS_FILE = Path(__file__).with_name("presets.toml")
MATCH_KEYS = ("envs",)  # how a section says which envs it is for; not settings


@cache
def load_presets(path: Path = PRESETS_FILE) -> dict[str, dict[str, Any]]:
    """Every section of the presets file, in file order."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {name!r} is not a section")
    return data


def settings(section: dict[str, Any]) -> dict[str, Any]:
    """A section's settings (its keys less the ones that say which envs it matches)."""
    return {k: v for k, v in section.items() if k not in MATCH_KEYS}


def _matches(section: dict[str, Any], env: str) -> bool:
    return any(fnmatch.fnmatchcase(env, pattern) for pattern in section.get("envs", []))


def resolve_preset(name: str, env: str) -> tuple[str, dict[str, Any]]:
    """(the preset's name, its settings) for `--preset name` and `--env env`; ("none", {}) if none."""
    presets = load_presets()
    if name == "none":
        return "none", {}
    if name == "auto":
        for section_name, section in presets.items():
            if _matches(section, env):
                return section_name, settings(section)
        from common.families import family_for

        family_preset = family_for(env).preset_for(env)
        if family_preset is None:
            return "none", {}
        if family_preset not in presets:
            raise ConfigError(f"the {family_for(env).name} family's preset {family_preset!r} is not "
                              f"a section of {PRESETS_FILE.name}")
        return family_preset, settings(presets[family_preset])
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; choose from auto, none, {', '.join(presets)} "
                          f"(sections of {PRESETS_FILE.name})")
    return name, settings(presets[name])
