"""A Hydra console script's command line, composed the way ``@hydra.main`` will compose it, before it does.

``@hydra.main`` parses argv itself and reports what it cannot compose (an unknown group option such
as ``task=FASHION_MNIST``, a missing ``--config-dir``, an override its grammar cannot parse, a YAML
syntax error in a user's file) as several lines of its own, with exit status 1. The suite composes
the same command line first, with Hydra's own parser, search path and loader, and turns each of
those into one :class:`ConfigError` (the console script prints one line, exit status 2). Files of a
user's ``--config-dir`` are all read here: one with a YAML error, or one Hydra would never read
because the suite's own file of that name comes first on the search path (a ``config.yaml``, an
``optimizer/adam.yaml``), is named. Help and Hydra's other modes (``--cfg``, ``--info``, ``-m``) are
left to Hydra.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import yaml
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from suite.types import ConfigError

QUOTING = ("quote a value with spaces or non-ASCII characters for Hydra inside the shell's quotes, e.g. "
           "'results_dir=\"/data/my résultats\"'")


def check_command_line(conf_dir: str, config_name: str, argv: Sequence[str]) -> None:
    """Raise one :class:`ConfigError` for anything in ``argv`` that ``@hydra.main`` would refuse."""
    args = get_args_parser().parse_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.multirun \
            or args.experimental_rerun or args.config_path or args.config_name:
        return  # Hydra's own modes: its text is what the user asked for
    user_dir = None if args.config_dir is None else Path(args.config_dir).absolute()
    if user_dir is not None:
        check_user_dir(user_dir, Path(conf_dir), args.config_dir)
    overrides = list(args.overrides)
    _parse(overrides)
    search_path = create_config_search_path(conf_dir)
    if user_dir is not None:  # where and how @hydra.main puts --config-dir
        search_path.prepend(provider="command-line", path=f"file://{user_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="suite", config_search_path=search_path)
        hydra.compose_config(config_name, overrides, run_mode=RunMode.RUN)
    except MissingConfigException as e:
        raise ConfigError(_missing(e, user_dir)) from None
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_problem(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_composition(e)) from None
    finally:
        GlobalHydra.instance().clear()


def check_user_dir(user_dir: Path, conf_dir: Path, given: str) -> None:
    """Every YAML file of a user's config directory must parse and be one Hydra reads."""
    if not user_dir.is_dir():
        raise ConfigError(f"--config-dir {given}: no such directory ({user_dir}); give the directory that holds "
                          f"your optimizer/<name>.yaml (e.g. --config-dir examples/conf), or drop --config-dir.")
    problems = []
    for path in sorted(user_dir.rglob("*.yaml")):
        relative = path.relative_to(user_dir)
        if (conf_dir / relative).is_file():
            instead = (f"name it {relative.parent}/<your name>.yaml" if relative.parent != Path(".")
                       else "put its settings on the command line")
            problems.append(f"{path} is never read: the suite's own conf/{relative} comes first on Hydra's search "
                            f"path ({instead})")
            continue
        try:
            OmegaConf.load(path)
        except yaml.YAMLError as e:
            problems.append(_yaml_problem(e, path))
    if problems:
        raise ConfigError(f"--config-dir {given}: " + "; ".join(problems) + ".")


def _yaml_problem(e: yaml.YAMLError, path: Path | None = None) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"{mark.name if mark else path}" + (f", line {mark.line + 1}, column {mark.column + 1}" if mark else "")
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{where}: YAML syntax error ({problem}); fix the file (a value with ':' or '[' needs quotes)"


def _parse(overrides: list[str]) -> None:
    """Each override through Hydra's grammar, so the one it cannot parse is named."""
    parser = OverridesParser.create()
    for i, override in enumerate(overrides):
        try:
            parser.parse_overrides([override])
        except OverrideParseException as e:
            reason = _parse_reason(str(e))
            if "=" not in override and i > 0:  # the shell split a value with spaces
                key, _, value = overrides[i - 1].partition("=")
                hint = (f"it is not key=value; if it is the rest of {key}'s value, quote the whole value for Hydra "
                        f"inside the shell's quotes: '{key}=\"{value} {override}\"'")
            elif not override.isascii() or " " in override:
                hint = QUOTING
            else:
                hint = "see Hydra's override grammar: https://hydra.cc/docs/advanced/override_grammar/basic/"
            raise ConfigError(f"cannot parse the override {override!r} ({reason}); {hint}.") from None


def _parse_reason(text: str) -> str:
    """Hydra's parse error in a few words: the character its lexer stopped at, or the parser's complaint."""
    lines = [line for line in text.splitlines() if line.strip() and "hydra.cc" not in line]
    if len(lines) > 1 and set(lines[1].strip()) == {"^"}:  # a caret under the character it stopped at
        at = lines[1].index("^")
        return f"Hydra's grammar stops at {lines[0][at]!r}" if at < len(lines[0]) else lines[0]
    return lines[-1].strip() if lines else text


def _missing(e: MissingConfigException, user_dir: Path | None) -> str:
    """An unknown group option (``task=FASHION_MNIST``) with the valid ones; any other missing config."""
    if not e.missing_cfg_file or e.options is None:
        return str(e).splitlines()[0]
    group, _, name = e.missing_cfg_file.rpartition("/")
    near = [o for o in e.options if o.lower() == name.lower()]
    hint = f" Did you mean {group}={near[0]}?" if near else ""
    if group == "optimizer" and not near:
        hint = (" An optimizer of your own needs its YAML in <dir>/optimizer/ and --config-dir <dir>." if user_dir
                is None else f" No optimizer/{name}.yaml in --config-dir {user_dir} either.")
    return f"{group}={name}: no such {group}; valid: {', '.join(e.options)}.{hint}"


def _composition(e: Exception) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return (f"unknown config key {unknown.group(1)}; check the spelling (e.g. optimizer=adam, not "
                f"optimiser=adam); the keys are listed by --cfg job.")
    cause = e.__cause__
    return text + (f" ({str(cause).splitlines()[0]})" if cause is not None else "")
