#!/usr/bin/env python3
"""Install labctl for one lab member: a virtual environment with labctl in it, then `labctl setup`.

    python3 install.py                      # asks for your settings
    python3 install.py --non-interactive --lab-config lab.yaml --user charlie \\
        --email charlie@lab.org --hpc-user raven=abc123 --key raven=~/.ssh/id_ed25519
    python3 install.py --uninstall [--remove-config]

Every option it does not know goes to `labctl setup` (see `labctl setup --help`), which writes
~/.config/labctl/config.yaml, can create an SSH key, and installs the watchdog's crontab block.
Standard library only. Running it again is safe. If a step fails, what this run created is
removed again; `--uninstall` removes the crontab block, the sshfs mounts, the venv and the
~/.local/bin/labctl link (and, with --remove-config, the config file).
"""

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
MIN_PYTHON = (3, 11)  # requires-python of pyproject.toml


def fail(message: str) -> int:
    """Report `message` as one line on stderr; the exit code to return for it."""
    print(f"[install] error: {message}", file=sys.stderr, flush=True)
    return 2


# Before anything else: the annotations below need 3.10, and without `from __future__ import
# annotations` this file compiles on 3.6 too, so every old python3 gets this far.
if sys.version_info < MIN_PYTHON:
    sys.exit(
        fail(
            "labctl needs Python {}.{} or newer, and {} is {}: run install.py with a newer one "
            "(Debian 12 and Ubuntu 24.04 have it as python3; elsewhere install python3.11 and "
            "python3.11-venv)".format(*MIN_PYTHON, sys.executable, sys.version.split()[0])
        )
    )


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def config_path(explicit: str | None) -> Path:
    """The config labctl reads: --config, then $LABCTL_CONFIG, then the XDG default (the lookup
    of labctl.install.onboarding.config_file, which this script cannot import)."""
    if explicit or os.environ.get("LABCTL_CONFIG"):
        return Path(explicit or os.environ["LABCTL_CONFIG"]).expanduser().absolute()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "labctl" / "config.yaml"


def say(message: str) -> None:
    print(f"[install] {message}", flush=True)


def run(argv: list[str]) -> int:
    """Run argv with this terminal (setup may ask questions); its exit code."""
    try:
        return subprocess.run(argv, check=False).returncode
    except OSError as exc:
        say(f"cannot run {argv[0]}: {exc.strerror}")
        return 127


def labctl(venv: Path, config: str | None, *args: str) -> list[str]:
    return [str(venv / "bin" / "labctl"), *(["--config", config] if config else []), *args]


def is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


def link_path() -> Path:
    return Path.home() / ".local" / "bin" / "labctl"


# A path-based editable install: the venv's site-packages gets a .pth with the clone's folder. The
# default (an import hook that runs after the path search) loses to any folder named `labctl` in
# the current directory, such as the clone itself seen from a member's home (`~/labctl`): cron's
# lines and every Python session started in `~` then found that folder, not the package.
EDITABLE = ["--config-settings", "editable_mode=compat"]


def install_stamp() -> str:
    """What an installed venv records: the repository, how it is installed and its dependencies
    (an editable install needs pip again only when pyproject.toml changes)."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return f"{REPO}\n{' '.join(EDITABLE)}\n{digest}\n"


def install(args: argparse.Namespace, setup_args: list[str]) -> int:
    venv: Path = args.venv
    if venv.exists() and not is_venv(venv):
        say(f"{venv} exists and is not a virtual environment: choose another --venv")
        return 2
    created = not venv.exists()
    if created and importlib.util.find_spec("ensurepip") is None:
        package = "python{}.{}-venv".format(*sys.version_info[:2])
        return fail(
            f"{sys.executable} cannot create a virtual environment (it has no ensurepip): "
            f"install {package} (Debian/Ubuntu: apt install {package}) and run install.py again"
        )
    if created:
        say(f"creating a virtual environment in {venv}")
        if run([sys.executable, "-m", "venv", str(venv)]) != 0:
            shutil.rmtree(venv, ignore_errors=True)
            return 1
    stamp, wanted = venv / ".labctl-install", install_stamp()
    if stamp.is_file() and stamp.read_text() == wanted:
        say(f"labctl from {REPO} is installed already (pyproject.toml unchanged)")
        code = 0
    else:
        say(f"installing labctl from {REPO} (pip install -e)")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *EDITABLE]
        pip += ["-e", str(REPO)]
        code = run(pip)
        if code == 0:
            stamp.write_text(wanted)
    if code == 0:
        say("handing over to labctl setup")
        interactive = [] if not args.non_interactive else ["--non-interactive"]
        code = run(labctl(venv, args.config, "setup", *interactive, *setup_args))
    if code != 0:
        if created:
            say(f"failed: removing {venv} again")
            shutil.rmtree(venv, ignore_errors=True)
        return code
    link = link_path()
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(venv / "bin" / "labctl")
        say(f"linked {link} (put {link.parent} on your PATH)")
    say(f"done: '{venv / 'bin' / 'labctl'} doctor' checks the installation")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    venv: Path = args.venv
    if (venv / "bin" / "labctl").exists():
        if run(labctl(venv, args.config, "cron", "remove")) != 0:
            say("could not remove the crontab block: fix the error above and run this again")
            return 1
        if run(labctl(venv, args.config, "umount")) != 0:
            say("could not unmount (see above): run 'fusermount -u MOUNT_POINT' yourself")
    else:
        say(f"no labctl in {venv}: remove a '# >>> labctl >>>' block with 'crontab -e' yourself")
    if args.remove_config:
        config = config_path(args.config)
        if config.exists():
            config.unlink()
            say(f"removed {config}")
    link = link_path()
    if link.is_symlink() and Path(os.readlink(link)) == venv / "bin" / "labctl":
        link.unlink()
        say(f"removed {link}")
    if is_venv(venv):
        shutil.rmtree(venv)
        say(f"removed {venv}")
    say("uninstalled (your data, logs and keys are kept)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # an abbreviated `labctl setup` option must not match one of ours
    )
    parser.add_argument(
        "--venv",
        type=lambda p: Path(p).expanduser().absolute(),
        default=data_home() / "labctl" / "venv",
        help="where the virtual environment goes (default: %(default)s)",
    )
    parser.add_argument("--config", help="config file (default: ~/.config/labctl/config.yaml)")
    parser.add_argument("--non-interactive", action="store_true", help="ask nothing")
    parser.add_argument("--uninstall", action="store_true", help="remove what install added")
    parser.add_argument(
        "--remove-config", action="store_true", help="with --uninstall: delete the config too"
    )
    args, setup_args = parser.parse_known_args(argv)
    if args.uninstall:
        return uninstall(args)
    return install(args, setup_args)


if __name__ == "__main__":
    sys.exit(main())
